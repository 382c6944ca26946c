"""DDP training on CPU (gloo): 2 processes under torchrun follow the single-process run of the same global
batch, and end with identical weights on both ranks."""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from training import run_train

from rrm.engine import distributed
from rrm.engine.recipe import TrainSettings
from rrm.engine.sampler import StepBatchSampler
from rrm.io import load_torch
from rrm.settings import EnergyParams, MiningSettings, OneStepRecipe, load_settings

# Started as `python runner.py SETTINGS NPROC`: distributed.launch re-runs it under torchrun, as a stage
# does with params `nproc`. The process group it opens serves every run_train() call.
RUNNER = """
import sys
from rrm.engine import distributed

runs, nproc, mined, tests = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if distributed.launch(nproc):
    sys.exit(0)
import pickle, torch, torch.distributed as dist, torch.nn as nn  # noqa: E402 (the launcher needs none of it)
import rrm.engine.onestep as S  # noqa: E402
import rrm.engine.train as T  # noqa: E402
sys.path.insert(0, tests)
from training import run_train  # noqa: E402
original, built = T.build_model, []
recorded = torch.load(mined)

def replayed_targets(batch, *args):  # as _replaying in the test
    return torch.stack([recorded[bytes(crop.numpy())] for crop in batch["raw"]])

S._mined_targets = replayed_targets

def build_without_dropout(s, arch, device):  # as _without_dropout in the test
    model = original(s, arch, device)
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
    built.append(model)
    return model

T.build_model = build_without_dropout
dist.init_process_group("gloo")
with open(runs, "rb") as handle:
    settings = pickle.load(handle)
for s in settings:
    run_train(s)
    torch.save(built[-1].state_dict(), f"{s.out_model}.rank{dist.get_rank()}")
dist.destroy_process_group()
"""
MODES = ("cls", "supervised", "onestep")
# On the same targets the 2 ranks compute the same sums as the single process in another association order
# (per-rank partial sums, then the all-reduce). Torch sums pairwise: the relative error of a float32 sum of
# n terms is below log2(n) * eps = log2(4 * 48 * 48) * 2**-24 ~ 8e-7 for the largest (per-pixel) sums, for
# the O(1) losses and gradients here; 4 SGD steps at lr 0.02 with momentum 0.9 amplify it less than 10-fold,
# so 1e-5 bounds both the logged losses and the weights (with rtol 1e-4 for the larger weights).
FLOAT_BOUND = 1e-5
PARAMS = load_settings(Path(__file__).resolve().parents[2] / "params.yaml")


def _settings(root: Path, out: Path, mode: str) -> TrainSettings:
    # batch 4 of 12 images: 3 steps per epoch, so 4 steps cross an epoch boundary. Frozen BN: the batch
    # statistics would otherwise depend on the split. Masks have void and padding (scale < 1), so the
    # pixel-mean CE terms only match when normalised over the global batch.
    recipe = OneStepRecipe(freeze_bn=True, dropout=True, optimizer="sgd", steps=4, batch_size=4, crop_size=48,
                           scale_range=(0.7, 1.3), lr=0.02, weight_decay=1e-5, momentum=0.9, poly_power=0.9,
                           checkpoint_every=2, loss="joint", pseudo="rrm", schedule="poly",
                           energy=EnergyParams(sigma_rgb=15.0, sigma_xy=100.0, scale=0.5, weight=1e-5))
    mining = MiningSettings(params=PARAMS.mining.params, cam_scales=(0.5, 1.0), pool_processes=0)
    return TrainSettings(mode=mode, arch="resnet38", width=0.0625, head_bias="zeros", batch_norm=False, init=None, dataset="voc", data_root=str(root),
                         split="train", mask_dir=None, labels_file=None, out_model=str(out / mode / "model.pt"),
                         checkpoint=str(out / mode / "ckpt" / "last.pt"), live_dir=str(out / mode / "live"),
                         seed=5, device="cpu", amp="none", num_workers=0, nproc=1, recipe=recipe,
                         mining=mining if mode == "onestep" else None)


def _without_dropout(build):
    """Dropout masks are drawn per rank: without them the 1- and 2-process runs see the same network."""
    def wrapped(s: TrainSettings, arch, device: torch.device) -> torch.nn.Module:
        model = build(s, arch, device)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                m.p = 0.0
        return model
    return wrapped


def _recording(mine, store: dict[bytes, torch.Tensor]):
    """The real mining, each crop's targets kept by the crop's bytes (the seeded augmentation gives a rank the
    same crops as the single process, see test_a_rank_augments_its_slice_as_one_process_does). The 2 ranks
    replay them: a mined pixel at a threshold would otherwise flip on float rounding, a jump no float bound
    covers, while the test is about how DDP splits and reduces the losses on given targets."""
    def wrapped(batch: dict, *args) -> torch.Tensor:
        target = mine(batch, *args)
        for crop, mined in zip(batch["raw"], target, strict=True):
            store[bytes(crop.numpy())] = mined.clone()
        return target
    return wrapped


def _logged(live: Path) -> dict[str, list[float]]:
    """Per-step values dvclive wrote (rank 0: the all-reduced means)."""
    logged = {}
    for tsv in sorted((live / "plots" / "metrics" / "loss").glob("*.tsv")):
        with open(tsv) as handle:
            logged[tsv.stem] = [float(row[tsv.stem]) for row in csv.DictReader(handle, delimiter="\t")]
    return logged


def test_two_processes_follow_the_single_process_run(tiny_dataset, tmp_path, monkeypatch):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "runs.pkl").write_bytes(pickle.dumps([_settings(tiny_dataset, ddp, mode) for mode in MODES]))
    import rrm.engine.onestep as steps
    import rrm.engine.train as module

    mined: dict[bytes, torch.Tensor] = {}
    monkeypatch.setattr(module, "build_model", _without_dropout(module.build_model))
    monkeypatch.setattr(steps, "_mined_targets", _recording(steps._mined_targets, mined))
    for mode in MODES:  # the reference first: the 2 ranks replay its mined targets
        run_train(_settings(tiny_dataset, single, mode))
    torch.save(mined, tmp_path / "mined.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "runs.pkl"), "2",
                                str(tmp_path / "mined.pt"), str(Path(__file__).parents[1])], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-4000:]
    for mode in MODES:
        one, two = _logged(single / mode / "live"), _logged(ddp / mode / "live")
        assert set(one) == set(two) and "total" in one
        for name in one:
            assert len(one[name]) == len(two[name]) == 4
            diff = max(abs(a - b) for a, b in zip(one[name], two[name], strict=True))
            assert diff < FLOAT_BOUND, f"{mode} {name}: 2-process losses differ from 1-process by {diff}"
        model = ddp / mode / "model.pt"
        final, rank0, rank1 = (load_torch(model)["model"], torch.load(f"{model}.rank0"),
                               torch.load(f"{model}.rank1"))
        assert all(torch.equal(rank0[k], rank1[k]) and torch.equal(final[k], rank0[k]) for k in final)
        reference = load_torch(single / mode / "model.pt")["model"]
        assert all(torch.allclose(reference[k].float(), final[k].float(), rtol=1e-4, atol=FLOAT_BOUND) for k in final)
        assert not (ddp / mode / "ckpt" / "last.pt").exists()  # rank 0 cleaned up


def test_batch_not_divisible_by_processes_is_a_clear_error(tiny_dataset, tmp_path, monkeypatch):
    settings = _settings(tiny_dataset, tmp_path, "cls")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node 2 would set
    with pytest.raises(ValueError, match="batch_size 3 is not divisible by the 2 training processes"):
        run_train(replace(settings, recipe=replace(settings.recipe, batch_size=3)))
    with pytest.raises(ValueError, match="not divisible"):
        StepBatchSampler(12, 4, steps=2, seed=0, world_size=3)


def test_ranks_split_the_global_batch():
    single = list(StepBatchSampler(12, 4, steps=5, seed=2))
    halves = [list(StepBatchSampler(12, 4, steps=5, seed=2, rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves, strict=True)] == single


def test_a_rank_augments_its_slice_as_one_process_does(tiny_dataset):
    from rrm.data.transforms import TrainBatchCollate
    from rrm.data.voc import VOCSegmentation
    from rrm.engine.sampler import SeededCollate, SeededDataset

    dataset = SeededDataset(VOCSegmentation(str(tiny_dataset), "train", weak=True))
    collate = SeededCollate(TrainBatchCollate(crop_size=40, scale_range=(0.7, 1.3)))
    whole = [collate([dataset[key] for key in batch]) for batch in StepBatchSampler(12, 4, steps=3, seed=1)]
    for rank in (0, 1):
        for step, batch in enumerate(StepBatchSampler(12, 4, steps=3, seed=1, rank=rank, world_size=2)):
            part = collate([dataset[key] for key in batch])
            assert torch.equal(part["raw"], whole[step]["raw"][2 * rank:2 * rank + 2])
            assert torch.equal(part["roi"], whole[step]["roi"][2 * rank:2 * rank + 2])
            assert part["name"] == whole[step]["name"][2 * rank:2 * rank + 2]


def test_launch_runs_only_outside_torchrun(monkeypatch):
    assert not distributed.launch(1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not distributed.launch(2)  # already a torchrun worker: train here
