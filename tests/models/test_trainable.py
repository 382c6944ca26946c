"""Which parameters train: PSA's frozen stem for the VOC classifier, and the settings that pick it."""

from __future__ import annotations

import pytest
import torch

from rrm.data.transforms import PSA_COLOR_JITTER, PSA_RESIZE_LONG
from rrm.engine.train import TrainSettings, make_optimizer
from rrm.models.rrm_net import build_rrm
from rrm.models.trainable import PSA_FROZEN, freeze_modules


def test_psa_stem_is_frozen_and_left_out_of_the_optimiser() -> None:
    model = build_rrm(width=0.0625)
    frozen = freeze_modules(model)
    assert frozen and {name.split(".")[0] for name in frozen} == set(PSA_FROZEN)
    assert any(name.startswith("b2_1.") for name in frozen) and not any(n.startswith("b3") for n in frozen)
    params = dict(model.named_parameters())
    assert not any(params[name].requires_grad for name in frozen)
    convs = [n for n in params if "conv" in n and n.split(".")[0] not in PSA_FROZEN]  # BN is frozen anyway
    assert convs and all(params[n].requires_grad for n in convs)
    assert model.b3.conv_branch2a.weight.requires_grad and model.fc8.weight.requires_grad
    settings = TrainSettings(mode="cls", data_root="", split="", out_model="", checkpoint="", steps=2)
    optimizer, _ = make_optimizer(model, settings)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for n, p in model.named_parameters() if n in frozen}
    # a frozen layer keeps its weights through a step
    before = model.conv1a.weight.clone()
    model.train()
    model(torch.randn(2, 3, 32, 32))["cls"].sum().backward()
    optimizer.step()
    assert torch.equal(model.conv1a.weight, before) and model.conv1a.weight.grad is None


def test_unknown_module_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="conv1"):
        freeze_modules(build_rrm(width=0.0625), ("conv1",))


def test_settings_follow_psa_for_a_classifier_from_pretrained_weights() -> None:
    common = {"data_root": "", "split": "", "out_model": "", "checkpoint": ""}
    psa = TrainSettings(mode="cls", init="weights/imagenet.pth", **common)
    assert psa.resize_long == PSA_RESIZE_LONG and psa.color_jitter == PSA_COLOR_JITTER
    assert psa.frozen == PSA_FROZEN
    for s in (TrainSettings(mode="cls", **common), TrainSettings(mode="onestep", init="w.pth", **common)):
        assert s.resize_long is None and s.color_jitter is None and s.frozen == ()
    own = TrainSettings(mode="cls", init="w.pth", resize_long=(64, 96), frozen=(), **common)
    assert own.resize_long == (64, 96) and own.frozen == ()
