"""The pruned dense CRF (rrm.ops.crf_classes) against the full-K CRF at COCO's K = 81, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crf_classes.py [--photos 12] [--min-prob 0.05]

On VOC sample photos resized to 640x480 (COCO's usual shape) with trained-model-like score maps over
81 classes: the ground-truth mask in COCO's ids, one-hot, blurred (a network's soft boundaries),
perturbed by a smooth random field (its mistakes), plus three smooth distractor classes of low mass
per image (confusions), softmaxed with a temperature. For each photo, in turn: pydensecrf over all 81
classes, then the pruned CRF (kept_classes + pydensecrf over those), both with RRM's test-time
settings (10 iterations, Gaussian 3/3, bilateral 83/5/4), one process, one thread. Reported: argmax
agreement over all pixels, seconds per image (median and spread over photos, wall and CPU), the
ratio per photo, the kept-class counts, the bytes of the compact output (rrm crf --save-probs)
beside an (81, H, W) float16 map, agreement at other min_prob values, and COCO val (40,504 images)
extrapolated for 2 worker processes on 2 cores (per-image median x 40,504 / 2, from wall and from CPU
seconds).

Writes reports/bench/crf_classes.json.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import BENCH_DIR, VOC_SAMPLE, machine_info, timed, write_report
from PIL import Image

from rrm.data.coco_classes import VOC_TO_COCO
from rrm.data.datasets import COCO
from rrm.data.voc import read_split
from rrm.io import load_image, load_mask
from rrm.method.crf import dense_crf
from rrm.ops.crf_classes import kept_classes, label_map, pruned_crf, save_compact
from rrm.settings import CRFParams

SIZE = (480, 640)  # H, W
TEST_CRF = {"iterations": 10, "gauss_sxy": 3.0, "gauss_compat": 3.0, "bi_sxy": 83.0, "bi_srgb": 5.0, "bi_compat": 4.0}
COCO_VAL_IMAGES = 40_504
SWEEP = (0.01, 0.02, 0.1, 0.2)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (1, C, H, W)."""
    radius = int(3 * sigma)
    kernel = torch.exp(-torch.arange(-radius, radius + 1).float() ** 2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.transpose(2, 3), groups=x.shape[1])


def _smooth_field(channels: int, gen: torch.Generator, cells: int = 6) -> torch.Tensor:
    """(1, channels, H, W) smooth random field in about [-1, 1]: a coarse grid, bicubically upsampled."""
    coarse = torch.rand(1, channels, cells, cells * SIZE[1] // SIZE[0], generator=gen) * 2 - 1
    return F.interpolate(coarse, size=SIZE, mode="bicubic", align_corners=False).clamp(-1, 1)


def model_like_probs(mask: np.ndarray, seed: int, temperature: float = 1.5) -> np.ndarray:
    """(81, H, W) float32 softmax scores resembling a trained network's, from a (H, W) COCO-id mask."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.from_numpy(mask.astype(np.int64))
    target = target.where(target != 255, 0)
    present = torch.unique(target)
    logits = torch.zeros(1, COCO.num_classes, *SIZE)
    onehot = torch.stack([(target == c).float() for c in present])[None]
    logits[0, present] = 9.0 * _blur(onehot, sigma=6.0)[0] + 2.5 * _smooth_field(len(present), gen)[0]
    absent = torch.tensor([c for c in range(1, COCO.num_classes) if c not in set(present.tolist())])
    distractors = absent[torch.randperm(len(absent), generator=gen)[:3]]
    logits[0, distractors] = 5.0 * _smooth_field(3, gen, cells=4)[0].clamp(min=0) - 1.0
    return torch.softmax(logits / temperature, dim=1)[0].numpy()


def _photo(name: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.fromarray(load_image(VOC_SAMPLE / "JPEGImages" / f"{name}.jpg"))
                       .resize(SIZE[::-1], Image.BILINEAR)).copy()
    voc = np.asarray(Image.fromarray(load_mask(VOC_SAMPLE / "SegmentationClass" / f"{name}.png"))
                     .resize(SIZE[::-1], Image.NEAREST))
    lut = np.full(256, 255, np.uint8)
    lut[: len(VOC_TO_COCO)] = VOC_TO_COCO
    return image, lut[voc]


def _timed_call(fn: Callable, *args: object) -> tuple[object, float, float]:
    """fn(*args), its wall seconds and this process's CPU seconds."""
    out = []
    wall, cpu = timed(lambda: out.append(fn(*args)))
    return out[0], wall, cpu


def _npz_bytes(classes: np.ndarray, posterior: np.ndarray, tmp: Path) -> int:
    save_compact(tmp, classes, posterior)
    return tmp.stat().st_size


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": float(np.percentile(values, 25)), "q3": float(np.percentile(values, 75))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=12, help="sample photos to run (of 60)")
    parser.add_argument("--min-prob", type=float, default=0.05, help="kept_classes' threshold")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "crf_classes.json")
    args = parser.parse_args()
    names = read_split(VOC_SAMPLE, "train")[: args.photos]
    params = CRFParams(**TEST_CRF)
    rows, agree_sweep = [], {str(t): [] for t in SWEEP}
    for n, name in enumerate(names):
        image, mask = _photo(name)
        probs = model_like_probs(mask, seed=n)
        full_q, wall_full, cpu_full = _timed_call(dense_crf, image, probs, params)
        (classes, posterior), wall_pruned, cpu_pruned = _timed_call(pruned_crf, image, probs, TEST_CRF, args.min_prob)
        want, got = full_q.argmax(0).astype(np.uint8), label_map(classes, posterior)
        for threshold in SWEEP:
            kept = kept_classes(probs, threshold)
            agree_sweep[str(threshold)].append(float((label_map(kept, dense_crf(image, probs[kept], params))
                                                      == want).mean()))
        buffer = io.BytesIO()
        np.save(buffer, full_q.astype(np.float16))
        rows.append({"name": name, "kept": len(classes), "present": int(len(np.setdiff1d(np.unique(mask), [255]))),
                     "agreement": float((got == want).mean()), "crf_changed": float((want != probs.argmax(0)).mean()),
                     "full_s": wall_full, "pruned_s": wall_pruned, "full_cpu_s": cpu_full,
                     "pruned_cpu_s": cpu_pruned, "ratio": wall_full / wall_pruned,
                     "compact_bytes": _npz_bytes(classes, posterior, args.out.parent / f".{name}.npz"),
                     "full_float16_bytes": buffer.getbuffer().nbytes})
        (args.out.parent / f".{name}.npz").unlink()
        print(f"{name}: kept {len(classes):2d}, agreement {rows[-1]['agreement']:.5f}, full {wall_full:.2f} s, "
              f"pruned {wall_pruned:.2f} s, x{rows[-1]['ratio']:.1f}", file=sys.stderr)
    pixels = SIZE[0] * SIZE[1]

    def hours(key: str) -> float:
        return statistics.median(r[key] for r in rows) * COCO_VAL_IMAGES / 2 / 3600

    report = {
        "what": "pydensecrf over 81 classes vs over kept_classes (rrm.ops.crf_classes), 640x480, test-time settings",
        "settings": TEST_CRF, "min_prob": args.min_prob, "photos": len(rows), "pixels_per_photo": pixels,
        "agreement_all_pixels": float(np.mean([r["agreement"] for r in rows])),
        "agreement_per_photo": _spread([r["agreement"] for r in rows]),
        "agreement_other_min_prob": {t: float(np.mean(a)) for t, a in agree_sweep.items()},
        "crf_changed_fraction": _spread([r["crf_changed"] for r in rows]),
        "kept_classes": _spread([float(r["kept"]) for r in rows]),
        "full_s": _spread([r["full_s"] for r in rows]), "pruned_s": _spread([r["pruned_s"] for r in rows]),
        "full_cpu_s": _spread([r["full_cpu_s"] for r in rows]),
        "pruned_cpu_s": _spread([r["pruned_cpu_s"] for r in rows]),
        "speedup_per_photo": _spread([r["ratio"] for r in rows]),
        "compact_bytes": _spread([float(r["compact_bytes"]) for r in rows]),
        "full_float16_bytes": rows[0]["full_float16_bytes"],
        "coco_val_hours_2_cores": {
            "pruned_wall": hours("pruned_s"), "full_wall": hours("full_s"),
            "pruned_cpu": hours("pruned_cpu_s"), "full_cpu": hours("full_cpu_s"),
            "assumes": "2 worker processes, one per core, each taking the measured per-image median (wall: "
                       "as loaded as this run's machine; CPU: the work itself, a machine with 2 free cores); "
                       "score-map reading and writing not included"},
        "rows": rows, "machine": machine_info(),
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
