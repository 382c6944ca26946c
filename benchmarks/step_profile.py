"""Where one one-step RRM training step spends its time: network, CAM, mining, energy loss, backward.

    python benchmarks/step_profile.py [--width 0.125 --crop 96 --batch 4 --steps 5]
    python benchmarks/step_profile.py --width 1.0 --crop 321 --batch 4 --device cuda   # the paper's step

Inputs are generated (random images with blob objects), so it needs no dataset. Prints a table of
median milliseconds per part and the share of the step; writes reports/bench/step_profile[_<tag>].json.
The OpenMP wait policy is the one the process started with (recorded under "machine"); to put PASSIVE
next to the default, run it once more as `OMP_WAIT_POLICY=PASSIVE python benchmarks/step_profile.py
--tag passive`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from common import BENCH_DIR, REPO, machine_info, read_params, sync, write_report

from rrm.data.normalize import normalize_batch
from rrm.engine.mining import mine_batch
from rrm.method.cam import multiscale_cam
from rrm.method.crf_pool import CRFPool
from rrm.method.energy_loss import dense_energy_loss
from rrm.method.losses import classification_loss, split_cross_entropy
from rrm.models.rrm_net import build_rrm


def fake_batch(batch: int, crop: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 80, (batch, crop, crop, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:crop, :crop]
    labels = torch.zeros(batch, 20)
    for i in range(batch):
        for c in rng.choice(20, 2, replace=False):
            cy, cx, r = rng.integers(crop // 4, 3 * crop // 4, 2).tolist() + [crop // 5]
            raw[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(100, 255, 3)
            labels[i, c] = 1
    images = normalize_batch(raw)
    return images, torch.from_numpy(raw).permute(0, 3, 1, 2).float(), labels


def profile(width: float, crop: int, batch: int, steps: int, device: torch.device, processes: int) -> dict:
    model = build_rrm(width=width).to(device).train()
    images, raw, labels = fake_batch(batch, crop)
    images, raw_d, labels_d = images.to(device), raw.to(device), labels.to(device)
    roi = torch.ones(batch, crop, crop, device=device)
    raw_uint8 = raw.permute(0, 2, 3, 1).to(torch.uint8).numpy()
    mining = read_params(REPO / "params.yaml").mining.params  # the pipeline's mining (rule code)
    times: dict[str, list[float]] = defaultdict(list)
    with CRFPool(processes) as pool:
        for step in range(steps + 1):  # the first step warms up and is not counted
            marks = [("start", time.perf_counter())]

            def mark(name: str, marks: list = marks) -> None:
                sync(device)
                marks.append((name, time.perf_counter()))

            out = model(images)
            mark("network forward")
            with torch.no_grad():
                cam = multiscale_cam(model, images, labels_d, scales=(0.5, 1.0, 1.5, 2.0), scale1_cam=out["cam"])
            mark("multi-scale CAM")
            pseudo = mine_batch(raw_uint8, cam.cpu(), labels, mining, pool)
            target = torch.from_numpy(pseudo).long().to(device)
            mark("mining (CRFs)")
            seg = F.interpolate(out["seg"], (crop, crop), mode="bilinear", align_corners=False)
            loss = classification_loss(out["cls"], labels_d) + sum(split_cross_entropy(seg, target))
            energy = dense_energy_loss(raw_d, seg.softmax(1), roi, target, weight=1e-7)
            mark("energy loss")
            (loss + energy).backward()
            mark("backward")
            model.zero_grad(set_to_none=True)
            if step:
                for (_, t0), (name, t1) in zip(marks, marks[1:], strict=False):
                    times[name].append((t1 - t0) * 1000)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"parts_ms": medians, "step_ms": sum(medians.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2, help="CRF pool processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    device = torch.device(args.device)
    result = profile(args.width, args.crop, args.batch, args.steps, device, args.processes)
    print(f"one training step, ResNet-38 width {args.width}, batch {args.batch}, crop {args.crop}, {device}:")
    for name, ms in result["parts_ms"].items():
        print(f"  {name:<18} {ms:9.1f} ms  {ms / result['step_ms']:6.1%}")
    print(f"  {'total':<18} {result['step_ms']:9.1f} ms")
    name = f"step_profile_{args.tag}" if args.tag else "step_profile"
    write_report(BENCH_DIR / f"{name}.json", {"settings": vars(args), "machine": machine_info(device), **result})


if __name__ == "__main__":
    main()
