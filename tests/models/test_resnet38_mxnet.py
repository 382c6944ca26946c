"""PSA's MXNet ResNet-38 under our names: PSA's renaming, a strict load into our ResNet-38, the oracle's values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mxnet_files import psa_name

from rrm.models.mxnet_params import MXNetParamsError, read_ndarray_list
from rrm.models.resnet38 import ResNet38
from rrm.models.resnet38_mxnet import rename, resnet38_state, resnet38_width, torch_name
from rrm.models.weights import load_state_dict_checked

WIDTH = 1 / 16  # the oracle's width: int(channels / 16)


def test_names_follow_psa_conversion(mxnet_resnet38):
    names, _ = read_ndarray_list(mxnet_resnet38[0])
    assert [torch_name(name) for name in names] == [psa_name(name) for name in names]
    # beyond PSA's single-digit unit index, and without the arg:/aux: prefixes
    assert torch_name("res4b12_branch2b1_weight") == "b4_12.conv_branch2b1.weight"
    assert torch_name("aux:bn6a_branch2b2_moving_var") == "b6.bn_branch2b2.running_var"
    for foreign in ("arg:fc8_weight", "arg:res4b3_branch3_weight", "arg:bn4b3_branch2a_weight", "conv1a_bias"):
        with pytest.raises(KeyError):
            torch_name(foreign)


def test_state_loads_strictly_into_resnet38_and_equals_the_oracle(mxnet_resnet38):
    path, expected = mxnet_resnet38
    state, dropped = resnet38_state(path)
    assert dropped == ["arg:linear1000_weight", "arg:linear1000_bias"]
    assert resnet38_width(state, source="x") == WIDTH
    model = ResNet38(width=WIDTH)
    backbone = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(state) == set(expected) == backbone  # every backbone key filled, nothing else
    load_state_dict_checked(model, state, source=str(path))
    own = model.state_dict()
    for name, want in expected.items():
        assert own[name].dtype == torch.float32 and np.array_equal(own[name].numpy(), want), name


def test_foreign_and_clashing_names_are_all_reported():
    arrays = {"arg:conv1a_weight": np.zeros((4, 3, 3, 3), np.float32), "conv1a_weight": np.ones(1, np.float32),
              "arg:fc9_weight": np.zeros(2, np.float32), "arg:res2a_branch9_weight": np.zeros(2, np.float32)}
    with pytest.raises(ValueError) as info:
        rename(arrays, source="/w/other.params")
    message = str(info.value)
    assert message.startswith("/w/other.params: not PSA's ResNet-38 parameter names")
    assert "(2): arg:fc9_weight, arg:res2a_branch9_weight" in message
    assert "conv1a_weight and arg:conv1a_weight -> conv1a.weight" in message


def test_a_truncated_file_is_an_error_naming_it(mxnet_resnet38, tmp_path):
    cut = tmp_path / "half.params"
    cut.write_bytes(mxnet_resnet38[0].read_bytes()[:100_000])
    with pytest.raises(MXNetParamsError, match=rf"^{cut}: truncated: array \d+ data .* at byte offset \d+$"):
        resnet38_state(cut)


def test_width_needs_bn7():
    with pytest.raises(ValueError, match="^/w/empty.params: no bn7 parameters, not a ResNet-38 backbone$"):
        resnet38_width({"conv1a.weight": torch.zeros(4, 3, 3, 3)}, source="/w/empty.params")
