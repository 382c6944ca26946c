from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rrm.io import save_torch
from rrm.models.layers import freeze_batchnorm, lr_groups
from rrm.models.rrm_net import build_rrm
from rrm.models.weights import load_rrm_weights, load_state_dict_checked

WIDTH = 0.0625


def tiny() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_checked_load_copies_values_and_tolerates_missing_counters():
    src, dst = tiny(), tiny()
    state = {k: v + 1 for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_state_dict_checked(dst, state, source="a.pth")
    assert torch.equal(dst[0].weight, state["0.weight"]) and torch.equal(
        dst[1].running_var, state["1.running_var"]
    )


def test_checked_load_lists_every_problem_with_the_file_name():
    state = tiny().state_dict()
    state["2.weight_renamed"] = state.pop("2.weight")
    state["extra.bias"] = torch.zeros(3)
    state["0.bias"] = torch.zeros(5)
    with pytest.raises(ValueError) as info:
        load_state_dict_checked(tiny(), state, source="/weights/bad.pth")
    message = str(info.value)
    assert message.startswith("/weights/bad.pth:")
    assert "missing keys (1):\n    2.weight\n" in message
    assert "unexpected keys (2)" in message and "2.weight_renamed" in message and "extra.bias" in message
    assert "0.bias: file (5,) vs model (4,)" in message


def test_checked_load_allow_prefixes():
    state = {k: v for k, v in tiny().state_dict().items() if not k.startswith("2.")}
    state["head.weight"] = torch.zeros(1)
    model = tiny()
    before = model[2].weight.clone()
    load_state_dict_checked(model, state, source="x", allow_missing=("2.",), allow_unexpected=("head.",))
    assert torch.equal(model[2].weight, before)
    with pytest.raises(ValueError, match="head.weight"):
        load_state_dict_checked(tiny(), state, source="x", allow_missing=("2.",))


def test_checked_load_rejects_non_state_dicts():
    with pytest.raises(ValueError, match="f.pth: expected a state dict"):
        load_state_dict_checked(tiny(), [1, 2], source="f.pth")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="f.pth: entries that are not tensors: 0.weight"):
        load_state_dict_checked(tiny(), {"0.weight": 3}, source="f.pth")


def _backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() + 0.5
        for k, v in model.state_dict().items()
        if not k.startswith("fc8") and not k.endswith("num_batches_tracked")
    }


def test_loads_classification_only_file(tmp_path):
    torch.manual_seed(0)
    source = build_rrm(width=WIDTH)
    state = _backbone_state(source) | {"fc8.weight": torch.randn_like(source.fc8.weight)}
    path = tmp_path / "res38_cls.pth"
    torch.save(state, path)
    model = build_rrm(width=WIDTH)
    fresh_seg = model.fc8_seg_conv1.weight.clone()
    notes = load_rrm_weights(model, path)
    assert notes == [
        "fc8_seg_conv1 not in file: keeps its fresh initialisation",
        "fc8_seg_conv2 not in file: keeps its fresh initialisation",
    ]
    assert torch.equal(model.fc8.weight, state["fc8.weight"])
    assert torch.equal(model.b4_3.conv_branch2a.weight, state["b4_3.conv_branch2a.weight"])
    assert torch.equal(model.fc8_seg_conv1.weight, fresh_seg)


def test_loads_imagenet_file_dropping_1000_way_classifier(tmp_path):
    source = build_rrm(width=WIDTH)
    state = {f"module.{k}": v for k, v in _backbone_state(source).items()}  # DataParallel prefix
    state["module.fc8.weight"] = torch.randn(1000, source.out_channels, 1, 1)
    path = tmp_path / "ilsvrc-resnet38.pth"
    torch.save(state, path)
    model = build_rrm(width=WIDTH)
    notes = load_rrm_weights(model, path)
    assert notes[0] == "dropped ImageNet classifier entry fc8.weight"
    assert "fc8 not in file: keeps its fresh initialisation" in notes
    assert torch.equal(model.bn7.running_mean, state["module.bn7.running_mean"])


def test_mxnet_params_file_works_as_model_init(mxnet_resnet38, tmp_path):
    path, expected = mxnet_resnet38
    copy = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001"  # recognised by its header, not its name
    copy.write_bytes(path.read_bytes())
    for source in (path, copy):
        model = build_rrm(width=WIDTH)
        fresh = model.fc8_seg_conv1.weight.clone()
        notes = load_rrm_weights(model, source)
        assert notes == [
            "dropped ImageNet classifier entry arg:linear1000_weight",
            "dropped ImageNet classifier entry arg:linear1000_bias",
            "fc8 not in file: keeps its fresh initialisation",
            "fc8_seg_conv1 not in file: keeps its fresh initialisation",
            "fc8_seg_conv2 not in file: keeps its fresh initialisation",
        ]
        own = model.state_dict()
        assert all(np.array_equal(own[name].numpy(), want) for name, want in expected.items())
        assert torch.equal(model.fc8_seg_conv1.weight, fresh)


def test_broken_mxnet_params_as_model_init_names_file_and_offset(mxnet_resnet38, tmp_path):
    broken = tmp_path / "ilsvrc.params"
    data = bytearray(mxnet_resnet38[0].read_bytes())
    data[76:80] = (42).to_bytes(4, "little")  # array 0's dtype flag
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"^{broken}: unknown array 0 dtype flag 42 .* at byte offset 76$"):
        load_rrm_weights(build_rrm(width=WIDTH), broken)
    with pytest.raises(ValueError, match=r"conv1a.weight: file \(4, 3, 3, 3\) vs model \(8, 3, 3, 3\)"):
        load_rrm_weights(build_rrm(width=0.125), mxnet_resnet38[0])


def test_renamed_key_fails_naming_key_and_file(tmp_path):
    state = _backbone_state(build_rrm(width=WIDTH))
    state["b4_3.conv_branch2a.weights"] = state.pop("b4_3.conv_branch2a.weight")
    path = tmp_path / "renamed.pth"
    save_torch(path, state)
    with pytest.raises(ValueError) as info:
        load_rrm_weights(build_rrm(width=WIDTH), path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys (1):\n    b4_3.conv_branch2a.weight" in message
    assert "unexpected keys (1):\n    b4_3.conv_branch2a.weights" in message


def test_wrong_width_reports_shape_mismatch(tmp_path):
    path = tmp_path / "wide.pth"
    save_torch(path, build_rrm(width=0.125).state_dict())
    with pytest.raises(ValueError, match=r"conv1a.weight: file \(8, 3, 3, 3\) vs model \(4, 3, 3, 3\)"):
        load_rrm_weights(build_rrm(width=WIDTH), path)


def test_lr_groups_and_freeze_on_a_tiny_model():
    model = tiny()
    freeze_batchnorm(model)
    assert not model[1].training and not model[1].weight.requires_grad
    groups = lr_groups(model, new_prefixes=("2.",), lr=0.1, weight_decay=0.5)
    names = {g["name"]: [p.shape for p in g["params"]] for g in groups}
    assert names == {
        "pretrained_weight": [(4, 3, 3, 3)],
        "pretrained_bias": [(4,)],
        "new_weight": [(2, 4, 1, 1)],
        "new_bias": [(2,)],
    }
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.2, 1.0, 2.0])
