"""Which parameters train: PSA's frozen stem for the VOC classifier, and the settings that pick it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rrm.engine.optim import make_optimizer
from rrm.engine.train import build_model
from rrm.experiments.profiles import expand, load_profile
from rrm.experiments.training import training_run
from rrm.models.rrm_net import ARCHS, build_rrm
from rrm.models.trainable import freeze_modules
from rrm.settings import ClassifierRecipe, load_params, parse

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
PSA_FROZEN = ("conv1a", "b2", "b2_1", "b2_2")  # PSA's train_cls.py: the layers it does not train


def _classifier_run(overrides: dict) -> object:
    params = parse(expand(load_params(PARAMS), overrides, source="test"), "test")
    return training_run(params, "train_cls", out_model="-", checkpoint="-", live_dir=None)


def test_psa_stem_is_frozen_and_left_out_of_the_optimiser() -> None:
    run = _classifier_run({"train_cls.frozen": list(PSA_FROZEN), "model.width": 0.0625, "model.init": None})
    model = build_model(run, ARCHS[run.arch], torch.device("cpu"))
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen and {name.split(".")[0] for name in frozen} == set(PSA_FROZEN)
    assert any(name.startswith("b2_1.") for name in frozen) and not any(n.startswith("b3") for n in frozen)
    params = dict(model.named_parameters())
    convs = [n for n in params if "conv" in n and n.split(".")[0] not in PSA_FROZEN]
    assert convs and all(params[n].requires_grad for n in convs)
    optimizer, _ = make_optimizer(model, run, ARCHS[run.arch].scratch_new_lr_mult)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for n, p in model.named_parameters() if n in frozen}
    before = model.conv1a.weight.clone()  # a frozen layer keeps its weights through a step
    model.train()
    model(torch.randn(2, 3, 32, 32))["cls"].sum().backward()
    optimizer.step()
    assert torch.equal(model.conv1a.weight, before) and model.conv1a.weight.grad is None


def test_embedded_default_trains_every_layer() -> None:
    run = _classifier_run({"model.width": 0.0625})
    assert isinstance(run.recipe, ClassifierRecipe)
    assert run.recipe.resize_long is None and run.recipe.color_jitter is None and run.recipe.frozen == ()
    assert all(p.requires_grad for p in build_model(run, ARCHS[run.arch], torch.device("cpu")).parameters())


def test_unknown_module_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="conv1"):
        freeze_modules(build_rrm(width=0.0625), ("conv1",))


def test_imagenet_profile_gives_psas_recipe_to_the_classifier_run() -> None:
    overrides = {k: v for k, v in load_profile("voc-code-imagenet").items() if k.startswith("train_cls.")}
    recipe = _classifier_run(overrides).recipe
    assert recipe.resize_long == (256, 512) and recipe.color_jitter == (0.3, 0.3, 0.3, 0.1)
    assert recipe.frozen == PSA_FROZEN and recipe.steps == 9915 and recipe.batch_size == 16


def test_head_bias_init_per_profile() -> None:
    """voc-code builds the segmentation head as network/RRM.py (nn.Conv2d's default biases); the embedded
    default keeps them at zero. train_cls builds the network that becomes models/cls.pt."""
    overrides = {"model.width": 0.0625, "model.init": None}
    run = _classifier_run(overrides)
    embedded = build_model(run, ARCHS[run.arch], torch.device("cpu"))
    assert torch.count_nonzero(embedded.fc8_seg_conv1.bias) == 0
    code = {**load_profile("voc-code"), **overrides, "device": "cpu", "train_cls.steps": 10}
    run = _classifier_run(code)
    assert run.head_bias == "pytorch"
    model = build_model(run, ARCHS[run.arch], torch.device("cpu"))
    assert torch.count_nonzero(model.fc8_seg_conv1.bias) == model.fc8_seg_conv1.bias.numel()
