"""The network a training run starts from, when model.init is PSA's ImageNet ResNet-38 as downloaded (MXNet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rrm.engine.train import build_model
from rrm.experiments.profiles import expand, load_profile
from rrm.experiments.training import training_run
from rrm.models.rrm_net import ARCHS
from rrm.settings import load_params, parse

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_imagenet_classifier_run_starts_from_the_mxnet_file(mxnet_resnet38):
    path, expected = mxnet_resnet38
    overrides = {k: v for k, v in load_profile("voc-code-imagenet").items() if k.startswith("train_cls.")}
    overrides |= {"model.width": 1 / 16, "model.init": str(path)}
    params = parse(expand(load_params(PARAMS), overrides, source="test"), "test")
    run = training_run(params, "train_cls", out_model="-", checkpoint="-", live_dir=None)
    model = build_model(run, ARCHS[run.arch], torch.device("cpu"))
    own = model.state_dict()
    assert all(np.array_equal(own[name].numpy(), want) for name, want in expected.items())
    assert not model.conv1a.weight.requires_grad and model.b3.conv_branch2a.weight.requires_grad  # PSA's stem
    assert model(torch.randn(1, 3, 32, 32))["cls"].isfinite().all()
