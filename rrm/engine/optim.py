"""The optimiser and learning-rate policy of a training run."""

from __future__ import annotations

import torch
import torch.nn as nn

from rrm.engine.recipe import TrainSettings


def make_optimizer(model: nn.Module, s: TrainSettings, scratch_new_lr_mult: float = 10,
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with a poly schedule over the recipe's groups: ResNet-38's four (x1/x2/x10/x20), DeepLab's x1/x10.

    `optimizer: adam` (same groups and schedule) is for stages trained from random weights, where it
    converges in far fewer steps; the paper's recipes are SGD.
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
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=r.steps, power=r.poly_power)
    return optimizer, scheduler
