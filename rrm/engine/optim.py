"""The optimiser and learning-rate policy of a training run."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from rrm.engine.recipe import TrainSettings
from rrm.settings import OneStepRecipe


def make_optimizer(model: nn.Module, s: TrainSettings, scratch_new_lr_mult: float = 10,
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with a poly schedule over the recipe's groups: ResNet-38's four (x1/x2/x10/x20), DeepLab's x1/x10.

    `optimizer: adam` (same groups and schedule) is for stages trained from random weights, where it
    converges in far fewer steps; the paper's recipes are SGD. train_onestep's `schedule: poly_restart` is
    the authors' other one-step schedule (see `restart_lambdas`).
    """
    r = s.recipe
    groups = model.param_groups(r.lr, r.weight_decay)
    if r.optimizer == "adam":
        # Adam's step size does not scale with the gradient, so the SGD recipe's x2/x20 bias multipliers are
        # dropped. Fine-tuning (init given) keeps x10 for the new layers; from random weights the network's
        # registry entry says (rrm.models.registry.Arch.scratch_new_lr_mult).
        new_mult = 10 if s.init else scratch_new_lr_mult
        groups = [group | {"lr": lr, "initial_lr": lr} for group in groups
                  for lr in [r.lr * (new_mult if group["name"].startswith("new") else 1)]]
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=r.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum)
    if isinstance(r, OneStepRecipe) and r.schedule == "poly_restart":
        lambdas = restart_lambdas([g["initial_lr"] for g in optimizer.param_groups], r.lr, r.steps, r.poly_power)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=r.steps, power=r.poly_power)
    return optimizer, scheduler


def restart_lambdas(initial: list[float], base_lr: float, steps: int, power: float) -> list[Callable[[int], float]]:
    """LambdaLR factors of the authors' PolyOptimizer (RRM tool/torchutils.py), one per group.

    Before the step with index k (0-based): k < steps/2: each group at its own initial lr x
    (1 - k / (steps/2))^power; steps/2 <= k < steps: every group at base_lr x
    (1 - (k - steps/2) / (steps/2))^power, the x2/x10/x20 multipliers gone; k >= steps: the last value.
    (The authors' code writes the second half's lr as the literal 0.0007, its default base lr.)
    """
    half = 0.5 * steps

    def factor(initial_lr: float) -> Callable[[int], float]:
        def at(k: int) -> float:
            k = min(k, steps - 1)
            if k < half:
                return (1 - k / half) ** power
            return base_lr / initial_lr * (1 - (k - half) / (steps - half)) ** power
        return at

    return [factor(lr) for lr in initial]
