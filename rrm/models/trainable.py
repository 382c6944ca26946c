"""Which parameters a training stage updates: PSA trained its VOC classifier with the stem frozen."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def freeze_modules(model: nn.Module, frozen: Sequence[str]) -> list[str]:
    """Turn off the gradient of every parameter of the top-level modules named in `frozen`.

    PSA froze ResNet-38's conv1a, b2, b2_1, b2_2 for its VOC classifier (profile voc-code). Names match whole
    top-level modules ("b2" does not freeze "b2_1"). lr_groups leaves frozen parameters
    out of the optimiser. Returns the frozen parameter names; an unknown name is an error (a typo would
    silently train everything).
    """
    children = dict(model.named_children())
    unknown = sorted(set(frozen) - set(children))
    if unknown:
        raise ValueError(f"freeze_modules: no top-level module {unknown} in {type(model).__name__} "
                         f"(has {sorted(children)})")
    names = []
    for name, param in model.named_parameters():
        if name.split(".", 1)[0] in frozen:
            param.requires_grad_(False)
            names.append(name)
    return names
