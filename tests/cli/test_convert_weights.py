"""`rrm convert-weights`: PSA's MXNet ResNet-38 to a .pth under our names, checked against the MXNet oracle."""

from __future__ import annotations

import numpy as np
import torch
from typer.testing import CliRunner

from rrm.cli import app
from rrm.models.resnet38 import ResNet38
from rrm.models.weights import load_state_dict_checked

runner = CliRunner()


def test_converts_the_mxnet_file_to_a_strictly_loading_state_dict(mxnet_resnet38, tmp_path):
    path, expected = mxnet_resnet38
    out = tmp_path / "weights" / "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth"
    result = runner.invoke(app, ["convert-weights", str(path), str(out)])
    assert result.exit_code == 0, result.output
    assert "dropped the ImageNet classifier: arg:linear1000_weight, arg:linear1000_bias" in result.output
    assert f"wrote {out}: 191 tensors of ResNet-38 at width 0.0625" in result.output
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert set(state) == set(expected)
    for name, want in expected.items():
        assert state[name].dtype == torch.float32 and np.array_equal(state[name].numpy(), want), name
    model = ResNet38(width=1 / 16)
    load_state_dict_checked(model, state, source=str(out))  # every backbone key, no other, same shapes
    assert "convert-weights" in runner.invoke(app, ["--help"]).output


def test_a_corrupt_file_fails_naming_it_and_writes_nothing(mxnet_resnet38, tmp_path):
    broken = tmp_path / "broken.params"
    broken.write_bytes(b"\x13" + mxnet_resnet38[0].read_bytes()[1:])
    out = tmp_path / "out.pth"
    result = runner.invoke(app, ["convert-weights", str(broken), str(out)])
    assert result.exit_code == 1
    assert f"error: {broken}: not an MXNet NDArray file: header 0x113, expected 0x112 at byte offset 0" in result.output
    assert not out.exists()
