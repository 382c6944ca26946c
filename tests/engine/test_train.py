from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from rrm.engine.train import StepBatchSampler, TrainSettings, make_optimizer, train
from rrm.io import load_torch
from rrm.method.reliable import MiningParams
from rrm.models.deeplab import build_deeplab
from rrm.models.rrm_net import build_rrm


def _settings(root: Path, out: Path, **overrides) -> TrainSettings:
    base = TrainSettings(mode="onestep", data_root=str(root), split="train", out_model=str(out / "model.pt"),
                         checkpoint=str(out / "ckpt" / "last.pt"), width=0.0625, steps=8, batch_size=2,
                         crop_size=48, lr=0.01, checkpoint_every=3, cam_scales=(0.5, 1.0), pool_processes=0,
                         mining=MiningParams(rule="code", alpha_ratio=0.4),
                         energy={"sigma_rgb": 15.0, "sigma_xy": 100.0, "scale": 0.5, "weight": 1e-5})
    return replace(base, **overrides)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_torch(path)["model"]


def test_sampler_resumes_with_the_same_batches():
    full = list(StepBatchSampler(10, 3, steps=7, seed=1))
    resumed = list(StepBatchSampler(10, 3, steps=7, seed=1, start=4))
    assert resumed == full[4:]
    assert all(len(batch) == 3 for batch in full)


def test_supervised_loss_decreases(tiny_dataset, tmp_path):
    history = []
    settings = _settings(tiny_dataset, tmp_path, mode="supervised", steps=30, lr=2e-3, optimizer="adam",
                         freeze_bn=False, checkpoint_every=100)
    import rrm.engine.train as module

    original = module.step_losses

    def recording(*args, **kwargs):
        losses = original(*args, **kwargs)
        history.append(float(sum(losses.values()).detach()))
        return losses

    module.step_losses = recording
    try:
        train(settings)
    finally:
        module.step_losses = original
    assert len(history) == 30
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:5]) / 5


def test_onestep_run_is_deterministic_and_cleans_up(tiny_dataset, tmp_path):
    first = train(_settings(tiny_dataset, tmp_path / "a"))
    second = train(_settings(tiny_dataset, tmp_path / "b"))
    assert set(first) == {"cls", "ce_bg", "ce_fg", "energy", "total"}
    assert first == second
    assert all(torch.isfinite(torch.tensor(v)) for v in first.values())
    a, b = _weights(tmp_path / "a" / "model.pt"), _weights(tmp_path / "b" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "a" / "ckpt" / "last.pt").exists()  # finished: only the final model stays


RUNNER = """
import json, sys
from rrm.method.reliable import MiningParams
from rrm.engine.train import TrainSettings, train
raw = json.loads(sys.argv[1])
raw["mining"] = MiningParams(**raw["mining"])
train(TrainSettings(**raw))
"""


def test_killed_run_resumes_to_identical_weights(tiny_dataset, tmp_path):
    reference = _settings(tiny_dataset, tmp_path / "ref", steps=12, checkpoint_every=2)
    train(reference)
    killed = _settings(tiny_dataset, tmp_path / "kill", steps=12, checkpoint_every=2)
    raw = asdict(killed)
    raw["mining"].pop("crf")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(raw)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = Path(killed.checkpoint)
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the run finished or failed before its first checkpoint"
    step = load_torch(checkpoint)["step"]
    assert 0 < step < 12
    train(killed)  # resumes from the checkpoint
    a, b = _weights(tmp_path / "ref" / "model.pt"), _weights(tmp_path / "kill" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", ["cls", "onestep"])
def test_deeplab_trains_only_on_masks(tiny_dataset, tmp_path, mode):
    """A DeepLab has no classification head or CAM: only mode 'supervised' (two-step) takes it."""
    with pytest.raises(ValueError, match=f"mode '{mode}'"):
        _settings(tiny_dataset, tmp_path, mode=mode, arch="vgg16_largefov")


@pytest.mark.parametrize(("arch", "init", "new_mult"), [
    ("resnet38", None, 1),  # train_cls from random weights: all layers alike
    ("resnet38", "cls.pt", 10),  # one-step / full supervision fine-tune: x10 for the new layers
    ("vgg16_largefov", None, 10),  # DeepLab from random weights keeps x10 for its classifier
])
def test_adam_learning_rate_multipliers(tmp_path, arch, init, new_mult):
    s = _settings(tmp_path, tmp_path, mode="supervised" if arch != "resnet38" else "cls", arch=arch, init=init,
                  optimizer="adam", lr=1e-3, steps=10)
    model = build_rrm(width=0.0625) if arch == "resnet38" else build_deeplab(arch=arch, width=0.0625)
    optimizer, _ = make_optimizer(model, s)
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert {name: lr for name, lr in lrs.items() if name.startswith("new")} == pytest.approx(
        {name: 1e-3 * new_mult for name in lrs if name.startswith("new")})
    assert all(lr == pytest.approx(1e-3) for name, lr in lrs.items() if not name.startswith("new"))
    assert any(name.startswith("new") for name in lrs)


@pytest.mark.parametrize("pseudo", ["rrm", "cam"])
def test_onestep_with_torch_mining_and_bf16(tiny_dataset, tmp_path, pseudo):
    """crf_backend torch mines on the training device (no CRF pool); bf16 autocast keeps the losses fp32."""
    settings = _settings(tiny_dataset, tmp_path, steps=2, pseudo=pseudo, amp="bf16",
                         mining=MiningParams(rule="code", alpha_ratio=0.4, crf_backend="torch"))
    history = train(settings)
    assert set(history) == {"cls", "ce_bg", "ce_fg", "energy", "total"}
    assert all(torch.isfinite(torch.tensor(v)) for v in history.values())
    with pytest.raises(ValueError, match="amp"):
        replace(settings, amp="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_step_with_gpu_mining(tiny_dataset, tmp_path):
    """One step on the GPU: bf16 forward and CAM, channels_last, mining and energy loss on the device."""
    import rrm.engine.train as module

    seen = []
    original = module.mine_batch_torch

    def recording(images, cams, labels, params, roi=None):
        out = original(images, cams, labels, params, roi=roi)
        seen.append((cams.device.type, out.device.type))
        return out

    module.mine_batch_torch = recording
    try:
        history = train(_settings(tiny_dataset, tmp_path, steps=1, device="cuda", amp="bf16",
                                  mining=MiningParams(rule="code", crf_backend="torch")))
    finally:
        module.mine_batch_torch = original
    assert seen == [("cuda", "cuda")]
    assert all(torch.isfinite(torch.tensor(v)) for v in history.values())
