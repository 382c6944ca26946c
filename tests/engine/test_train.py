from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from training import ARCHS, STEPS, run_train

from rrm.engine.optim import make_optimizer
from rrm.engine.recipe import TrainSettings
from rrm.engine.sampler import StepBatchSampler
from rrm.io import load_torch
from rrm.settings import EnergyParams, MiningSettings, OneStepRecipe, load_settings

PARAMS = load_settings(Path(__file__).resolve().parents[2] / "params.yaml")
RECIPE = OneStepRecipe(freeze_bn=True, dropout=True, optimizer="sgd", steps=8, batch_size=2, crop_size=48,
                       scale_range=(0.7, 1.3), lr=0.01, weight_decay=1e-5, momentum=0.0, poly_power=0.9,
                       checkpoint_every=3, loss="joint", pseudo="rrm", schedule="poly",
                       energy=EnergyParams(sigma_rgb=15.0, sigma_xy=100.0, scale=0.5, weight=1e-5))
MINING = MiningSettings(params=PARAMS.mining.params, cam_scales=(0.5, 1.0), pool_processes=0)


def _settings(root: Path, out: Path, mining: MiningSettings | None = MINING, **recipe) -> TrainSettings:
    return TrainSettings(mode="onestep" if mining else "supervised", arch="resnet38", width=0.0625, head_bias="zeros",
                         batch_norm=False, init=None, dataset="voc", data_root=str(root), split="train", mask_dir=None, labels_file=None,
                         out_model=str(out / "model.pt"), checkpoint=str(out / "ckpt" / "last.pt"), live_dir=None,
                         seed=0, device="cpu", amp="none", num_workers=0, nproc=1,
                         recipe=replace(RECIPE, **recipe), mining=mining)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_torch(path)["model"]


def test_sampler_resumes_with_the_same_batches():
    full = list(StepBatchSampler(10, 3, steps=7, seed=1))
    resumed = list(StepBatchSampler(10, 3, steps=7, seed=1, start=4))
    assert resumed == full[4:]
    assert all(len(batch) == 3 for batch in full)


def test_supervised_loss_decreases(tiny_dataset, tmp_path):
    history = []
    settings = _settings(tiny_dataset, tmp_path, mining=None, steps=30, lr=2e-3, optimizer="adam",
                         freeze_bn=False, checkpoint_every=100)
    @contextmanager
    def recording(s):
        with STEPS[s.mode](s) as step:
            def recorded(*args):
                losses = step(*args)
                history.append(float(sum(losses.values()).detach()))
                return losses
            yield recorded

    run_train(settings, recording)
    assert len(history) == 30
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:5]) / 5


def test_onestep_run_is_deterministic_and_cleans_up(tiny_dataset, tmp_path):
    first = run_train(_settings(tiny_dataset, tmp_path / "a"))
    second = run_train(_settings(tiny_dataset, tmp_path / "b"))
    assert set(first) == {"cls", "ce_bg", "ce_fg", "energy", "total"}
    assert first == second
    assert all(torch.isfinite(torch.tensor(v)) for v in first.values())
    a, b = _weights(tmp_path / "a" / "model.pt"), _weights(tmp_path / "b" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "a" / "ckpt" / "last.pt").exists()  # finished: only the final model stays


RUNNER = """
import pickle, sys
sys.path.insert(0, sys.argv[2])
from training import run_train
with open(sys.argv[1], "rb") as handle:
    run_train(pickle.load(handle))
"""


def test_killed_run_resumes_to_identical_weights(tiny_dataset, tmp_path):
    reference = _settings(tiny_dataset, tmp_path / "ref", steps=12, checkpoint_every=2)
    run_train(reference)
    killed = _settings(tiny_dataset, tmp_path / "kill", steps=12, checkpoint_every=2)
    (tmp_path / "settings.pkl").write_bytes(pickle.dumps(killed))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path / "settings.pkl"), str(Path(__file__).parents[1])], env=env,
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
    run_train(killed)  # resumes from the checkpoint
    a, b = _weights(tmp_path / "ref" / "model.pt"), _weights(tmp_path / "kill" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("arch", "init", "new_mult"), [
    ("resnet38", None, 1),  # train_cls from random weights: all layers alike
    ("resnet38", "cls.pt", 10),  # one-step / full supervision fine-tune: x10 for the new layers
    ("vgg16_largefov", None, 10),  # DeepLab from random weights keeps x10 for its classifier
])
def test_adam_learning_rate_multipliers(tmp_path, arch, init, new_mult):
    s = replace(_settings(tmp_path, tmp_path, mining=None, optimizer="adam", lr=1e-3, steps=10), arch=arch, init=init)
    model = ARCHS[arch].build(num_classes=21, width=0.0625, batch_norm=False, freeze_bn=True, dropout=True, head_bias="zeros",
                              init=None, frozen=())
    optimizer, _ = make_optimizer(model, s, ARCHS[arch].scratch_new_lr_mult)
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert {name: lr for name, lr in lrs.items() if name.startswith("new")} == pytest.approx(
        {name: 1e-3 * new_mult for name in lrs if name.startswith("new")})
    assert all(lr == pytest.approx(1e-3) for name, lr in lrs.items() if not name.startswith("new"))
    assert any(name.startswith("new") for name in lrs)


@pytest.mark.parametrize("pseudo", ["rrm", "cam"])
def test_onestep_with_torch_mining_and_bf16(tiny_dataset, tmp_path, pseudo):
    """crf_backend torch mines on the training device (no CRF pool); bf16 autocast keeps the losses fp32."""
    settings = replace(_settings(tiny_dataset, tmp_path, steps=2, pseudo=pseudo, mining=_torch_mining()), amp="bf16")
    history = run_train(settings)
    assert set(history) == {"cls", "ce_bg", "ce_fg", "energy", "total"}
    assert all(torch.isfinite(torch.tensor(v)) for v in history.values())


def _torch_mining() -> MiningSettings:
    return replace(MINING, params=replace(MINING.params, crf_backend="torch"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_step_with_gpu_mining(tiny_dataset, tmp_path):
    """One step on the GPU: bf16 forward and CAM, channels_last, mining and energy loss on the device."""
    import rrm.engine.steps as module

    seen = []
    original = module.mine_batch_torch

    def recording(images, cams, labels, params, roi=None):
        out = original(images, cams, labels, params, roi=roi)
        seen.append((cams.device.type, out.device.type))
        return out

    module.mine_batch_torch = recording
    try:
        history = run_train(replace(_settings(tiny_dataset, tmp_path, steps=1, mining=_torch_mining()), device="cuda",
                                amp="bf16"))
    finally:
        module.mine_batch_torch = original
    assert seen == [("cuda", "cuda")]
    assert all(torch.isfinite(torch.tensor(v)) for v in history.values())
