"""The one-step learning-rate schedules against fresh transcriptions of the authors' optimisers
(RRM tool/torchutils.py): PolyOptimizer_cls (train_from_cls_weight.py, schedule poly) and PolyOptimizer
(train_from_cls_weight(ori).py, schedule poly_restart)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rrm.engine.optim import make_optimizer
from rrm.experiments.profiles import expand, load_profile
from rrm.experiments.training import training_run
from rrm.models.rrm_net import build_rrm
from rrm.settings import load_params, parse

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


class PolyOptimizer(torch.optim.SGD):
    def __init__(self, params, lr, weight_decay, max_step, momentum=0.9):
        super().__init__(params, lr, weight_decay)
        self.global_step = 0
        self.max_step = max_step
        self.momentum = momentum
        self.__initial_lr = [group['lr'] for group in self.param_groups]

    def step(self, closure=None):
        if self.global_step < (0.5 * self.max_step):
            lr_mult = (1 - self.global_step / (0.5 * self.max_step)) ** self.momentum
            for i in range(len(self.param_groups)):
                self.param_groups[i]['lr'] = self.__initial_lr[i] * lr_mult
        elif self.global_step < self.max_step:
            lr_mult = (1 - (self.global_step - (0.5 * self.max_step)) / (self.max_step - (0.5 * self.max_step))) \
                ** self.momentum
            for i in range(len(self.param_groups)):
                self.param_groups[i]['lr'] = 0.0007 * lr_mult
        super().step(closure)
        self.global_step += 1


class PolyOptimizer_cls(torch.optim.SGD):  # noqa: N801 (the authors' name)
    def __init__(self, params, lr, weight_decay, max_step, momentum=0.9):
        super().__init__(params, lr, weight_decay)
        self.global_step = 0
        self.max_step = max_step
        self.momentum = momentum
        self.__initial_lr = [group['lr'] for group in self.param_groups]

    def step(self, closure=None):
        if self.global_step < self.max_step:
            lr_mult = (1 - self.global_step / self.max_step) ** self.momentum
            for i in range(len(self.param_groups)):
                self.param_groups[i]['lr'] = self.__initial_lr[i] * lr_mult
        super().step(closure)
        self.global_step += 1


def _authors_lrs(cls, model, lr: float, wt_dec: float, max_step: int, steps: int) -> list[list[float]]:
    """Each group's lr during each of `steps` steps (the authors' four groups, as train_from_cls_weight.py)."""
    groups = [[p for n, p in model.named_parameters() if n.startswith(prefix) and p.dim() == dim]
              for prefix, dim in ((("conv1a", "b", "bn7"), 4), (("conv1a", "b", "bn7"), 1),
                                  (("fc8",), 4), (("fc8",), 1))]
    optimizer = cls([{'params': groups[0], 'lr': lr, 'weight_decay': wt_dec},
                     {'params': groups[1], 'lr': 2 * lr, 'weight_decay': 0},
                     {'params': groups[2], 'lr': 10 * lr, 'weight_decay': wt_dec},
                     {'params': groups[3], 'lr': 20 * lr, 'weight_decay': 0}],
                    lr=lr, weight_decay=wt_dec, max_step=max_step)
    seen = []
    for _ in range(steps):
        optimizer.step()  # no gradients: only the schedule moves
        seen.append([group['lr'] for group in optimizer.param_groups])
    return seen


def _our_lrs(run, model, steps: int) -> list[list[float]]:
    optimizer, scheduler = make_optimizer(model, run)
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in optimizer.param_groups])  # the lr this step runs with
        optimizer.step()
        scheduler.step()
    return seen


def _voc_code_run(**onestep):
    overrides = {**load_profile("voc-code"), "device": "cpu", "model.width": 0.0625,
                 **{f"train_onestep.{k}": v for k, v in onestep.items()}}
    p = parse(expand(load_params(PARAMS), overrides, source="test"))
    return training_run(p, "train_onestep", init="-", out_model="-", checkpoint="-", live_dir=None)


@pytest.mark.parametrize("max_step", [20, 21])  # odd: the restart falls at 0.5 * max_step = 10.5
@pytest.mark.parametrize(("schedule", "authors"), [("poly_restart", PolyOptimizer), ("poly", PolyOptimizer_cls)])
def test_schedule_equals_the_authors(schedule: str, authors, max_step: int) -> None:
    model = build_rrm(width=0.0625, freeze_bn=False)  # BatchNorm trained: the 1-d group is not empty
    run = _voc_code_run(schedule=schedule, steps=max_step)
    ours = _our_lrs(run, model, max_step)
    want = _authors_lrs(authors, model, run.recipe.lr, run.recipe.weight_decay, max_step, max_step)
    assert run.recipe.lr == 7e-4  # voc-code's base lr is the literal the authors' PolyOptimizer restarts at
    # PolynomialLR multiplies per-step ratios: float64 rounding over max_step factors
    assert ours == [pytest.approx(row, rel=1e-12, abs=1e-18) for row in want]
    if schedule == "poly_restart":
        half = -(-max_step // 2)  # first step index >= 0.5 * max_step
        assert ours[half - 1][3] < 0.25 * 20 * 7e-4  # decayed towards 0 before the restart ...
        # ... then every group at the base lr (x (1 - 0.5 / 10.5)^0.9 at the odd max_step's first restart step)
        assert len(set(ours[half])) == 1 and 0.95 * 7e-4 < ours[half][0] <= 7e-4


def test_restart_is_at_the_base_lr() -> None:
    """Under another base lr (voc-paper's 1e-3) the restart is at that lr; the authors' code writes 0.0007."""
    model = build_rrm(width=0.0625)
    run = _voc_code_run(schedule="poly_restart", steps=20, lr=1e-3)
    ours = _our_lrs(run, model, 20)
    assert [g["name"] for g in make_optimizer(model, run)[0].param_groups][2:] == ["new_weight", "new_bias"]
    assert ours[0] == pytest.approx([1e-3, 2e-3, 1e-2, 2e-2])
    assert ours[10] == pytest.approx([1e-3] * 4)


def test_schedule_applies_to_sgd_and_adam_alike() -> None:
    model = build_rrm(width=0.0625)
    run = _voc_code_run(schedule="poly_restart", steps=20)
    adam = replace(run, recipe=replace(run.recipe, optimizer="adam"))
    assert _our_lrs(adam, model, 20)[10] == pytest.approx([7e-4] * 4)
