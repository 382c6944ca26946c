"""rrm.ops against pydensecrf (same run) and the authors' C++ filter (recorded), plus a COCO-shaped CRF job.

    .venv/bin/python benchmarks/ops.py [--runs 5] [--coco-images 6]

(a) On 4 of the reference photos at 161x161, K = 21, made by the recipe of
    ../shared/reference/energy_lattice_ref.py: ``bilateral_filter`` and ``DenseEnergyLoss``
    (forward + backward, 322x322 input at scale 0.5, so the filter runs at 161x161), beside the C++
    ``bilateralfilter_batch`` time stored in the reference file (``timing``: batch 4 at 161x161,
    2 OpenMP threads on a 2-core machine of this kind; recorded there, not re-run here) and beside
    pydensecrf building the same bilateral term plus one mean-field iteration, measured here.
    The 10-iteration dense CRF (RRM's test-time settings) on the same 4 photos at 321x321:
    ``dense_crf`` torch vs pydensecrf one after another. Argmax agreement of the two backends on all
    60 VOC sample photos at half size.
(b) COCO-shaped post-processing: N photos (default 6, to stay within ~5 minutes on 2 cores) of 640x480 (VOC sample photos resized), K = 81 smooth
    random probabilities, 10 iterations: pydensecrf one image after another vs the CPU worker pool
    (``dense_crf(backend="pydensecrf")``, one process per core), per image and extrapolated
    linearly to COCO val's 40,504 images. Wall and CPU seconds both: on a shared machine the
    pool's wall time depends on how many cores the other processes leave it. GPU rows are measured when CUDA is present, else
    marked "unmeasured".

Writes reports/bench/ops.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import alternate, pydensecrf_one_iteration
from PIL import Image

from rrm.io import load_image, load_mask, write_json
from rrm.ops import DenseEnergyLoss, bilateral_filter, dense_crf
from rrm.ops.crf import cpu_pool

REPO = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("RRM_BENCH_OUT", REPO / "reports" / "bench" / "ops.json"))
SHARED = REPO.parent / "shared"
VOC_SAMPLE = Path(os.environ.get("RRM_VOC_SAMPLE", SHARED / "data" / "voc2012-sample"))
REFERENCE = Path(os.environ.get("RRM_REFERENCE", SHARED / "reference"))
COCO_VAL_IMAGES = 40_504
TEST_CRF = {"iterations": 10, "gauss_sxy": 3.0, "gauss_compat": 3.0, "bi_sxy": 83.0, "bi_srgb": 5.0, "bi_compat": 4.0}


def _recipe():
    spec = importlib.util.spec_from_file_location("energy_lattice_ref", REFERENCE / "energy_lattice_ref.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _photos(names: list[str], size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) uint8 photos of the VOC sample resized (bilinear) to size = (H, W)."""
    return torch.stack([
        torch.from_numpy(np.asarray(Image.fromarray(load_image(VOC_SAMPLE / "JPEGImages" / f"{n}.jpg"))
                                    .resize(size[::-1], Image.BILINEAR)).copy()).permute(2, 0, 1) for n in names])


def _smooth_probs(n: int, k: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, k, max(size[0] // 40, 2), max(size[1] // 40, 2), generator=gen)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).softmax(1)


def _hwc(images: torch.Tensor) -> list[np.ndarray]:
    return [np.ascontiguousarray(im) for im in images.permute(0, 2, 3, 1).numpy()]


def _sequential_pydensecrf(images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    with cpu_pool(0) as inline:
        return dense_crf_pool(inline, images, probs)


def dense_crf_pool(pool: Any, images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    return dense_crf(images, probs, backend="pydensecrf", pool=pool, **TEST_CRF)


def bench_ops(runs: int) -> dict[str, object]:
    ref = json.loads((REFERENCE / "energy_lattice_ref.json").read_text())
    recipe, ids = _recipe(), ref["params"]["ids"][:4]
    images = torch.from_numpy(np.stack([recipe.load_image(str(VOC_SAMPLE), i) for i in ids]))
    probs = torch.from_numpy(np.stack([recipe.make_prob(i) for i in ids]))
    rgb, maps = _hwc(images.round().to(torch.uint8)), list(probs.numpy())
    big_images = F.interpolate(images, size=(322, 322), mode="nearest")
    big_probs = F.interpolate(probs, size=(322, 322), mode="bilinear", align_corners=False)
    loss = DenseEnergyLoss(1e-7, 15.0, 100.0, 0.5)
    roi, labels = torch.ones(4, 322, 322), torch.full((4, 1, 322, 322), 255)

    def energy() -> None:
        loss(big_images, big_probs.detach().requires_grad_(), roi, labels).sum().backward()

    timings = alternate({
        "bilateral_filter": lambda: bilateral_filter(images, probs, 15.0, 50.0),
        "DenseEnergyLoss_fwd_bwd_322_scale0.5": energy,
        "pydensecrf_bilateral_1iter": lambda: pydensecrf_one_iteration(np.stack(rgb), maps, 50.0, 15.0),
    }, runs)
    cpp = ref["timing"]["cpp_batch_N4_median_s"]
    timings["cpp_bilateralfilter_batch_recorded"] = {"median_s": cpp, "source": "energy_lattice_ref.json timing",
                                                     "machine": ref["timing"]["machine"]}
    for name in ("bilateral_filter", "DenseEnergyLoss_fwd_bwd_322_scale0.5", "pydensecrf_bilateral_1iter"):
        timings[name]["ratio_to_cpp"] = timings[name]["median_s"] / cpp
    crf_images, crf_probs = _photos(ids, (321, 321)), _smooth_probs(4, 21, (321, 321))
    with cpu_pool() as pool:
        crf = alternate({
            "dense_crf_torch": lambda: dense_crf(crf_images, crf_probs, **TEST_CRF),
            "dense_crf_pydensecrf_pool": lambda: dense_crf(crf_images, crf_probs, backend="pydensecrf", pool=pool,
                                                           **TEST_CRF),
            "pydensecrf_sequential": lambda: _sequential_pydensecrf(crf_images, crf_probs),
        }, max(runs // 2, 2))
    crf["ratio_torch_over_pydensecrf"] = crf["dense_crf_torch"]["median_s"] / crf["pydensecrf_sequential"]["median_s"]
    return {"batch4_161px_k21": timings, "dense_crf_batch4_321px_k21_10iter": crf}


def _noisy_truth(mask: np.ndarray, seed: int) -> torch.Tensor:
    """(1, 21, H, W) softmax of a noisy, smoothed one-hot of a VOC mask: something for the CRF to repair."""
    labels = torch.from_numpy(mask.astype(np.int64))
    onehot = F.one_hot(labels.where(labels != 255, 0), 21).permute(2, 0, 1).float()[None]
    smooth = F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False)
    noise = torch.randn(smooth.shape, generator=torch.Generator().manual_seed(seed))
    return (torch.log(0.6 * smooth + 0.4 / 21) + 1.5 * noise).softmax(1)


def agreement_on_voc_sample() -> dict[str, object]:
    """dense_crf torch vs pydensecrf argmax on every VOC sample photo at a quarter of its size (test-time settings),
    on noisy ground-truth probabilities; also how many pixels the CRF changes (so agreement is not idle)."""
    names = sorted(p.stem for p in (VOC_SAMPLE / "JPEGImages").glob("*.jpg"))
    shares, changed = [], []
    with cpu_pool(0) as inline:
        for seed, name in enumerate(names):
            mask = Image.fromarray(load_mask(VOC_SAMPLE / "SegmentationClass" / f"{name}.png"))
            size = (mask.height // 4, mask.width // 4)
            photo = _photos([name], size)
            probs = _noisy_truth(np.asarray(mask.resize(size[::-1], Image.NEAREST)), seed)
            ours = dense_crf(photo, probs, **TEST_CRF)[0].argmax(0).numpy()
            theirs = dense_crf_pool(inline, photo, probs)[0].argmax(0).numpy()
            shares.append(float((ours == theirs).mean()))
            changed.append(float((theirs != probs[0].argmax(0).numpy()).mean()))
    return {"images": len(shares), "min": min(shares), "mean": float(np.mean(shares)),
            "below_0.99": sum(s < 0.99 for s in shares), "pixels_changed_by_crf_mean": float(np.mean(changed)),
            "size": "a quarter of each photo's size", "k": 21, "probs": "noisy smoothed one-hot of the VOC mask"}


def bench_coco(count: int) -> dict[str, object]:
    names = sorted(p.stem for p in (VOC_SAMPLE / "JPEGImages").glob("*.jpg"))
    picked = [names[i % len(names)] for i in range(count)]
    images, probs = _photos(picked, (480, 640)), _smooth_probs(count, 81, (480, 640))
    wall, cpu = time.perf_counter(), time.process_time()
    _sequential_pydensecrf(images, probs)
    sequential, sequential_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with cpu_pool() as pool:  # timed as a command runs it: process start and imports included
        dense_crf_pool(pool, images, probs)
        workers = pool.workers
    pooled = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers' CPU, counted once they exit
    pool_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    rows = {"pydensecrf_sequential": sequential / count, "cpu_pool": pooled / count}
    report: dict[str, object] = {
        "images": count, "size": "640x480", "k": 81, "settings": TEST_CRF, "pool_workers": workers,
        "per_image_s": rows, "cpu_s_per_image": {"pydensecrf_sequential": sequential_cpu / count,
                                                   "cpu_pool_workers": pool_cpu / count},
        "speedup_pool_over_sequential": sequential / pooled,
        "coco_val_hours_extrapolated": {k: v * COCO_VAL_IMAGES / 3600 for k, v in rows.items()},
        "extrapolation": f"linear: measured per-image time x {COCO_VAL_IMAGES} (COCO val), not measured on COCO",
    }
    if torch.cuda.is_available():
        batch_images, batch_probs = images[:8].cuda(), probs[:8].cuda()
        dense_crf(batch_images, batch_probs, **TEST_CRF)
        torch.cuda.synchronize()
        start = time.perf_counter()
        dense_crf(batch_images, batch_probs, **TEST_CRF)
        torch.cuda.synchronize()
        rows["gpu_torch_batch8"] = (time.perf_counter() - start) / 8
        report["coco_val_hours_extrapolated"]["gpu_torch_batch8"] = rows["gpu_torch_batch8"] * COCO_VAL_IMAGES / 3600
    else:
        report["gpu_torch_batch8"] = "unmeasured: no CUDA device on the benchmark machine"
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--coco-images", type=int, default=6)
    args = ap.parse_args()
    report: dict[str, object] = {"machine": {
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}}
    report["ops_vs_pydensecrf_and_cpp"] = bench_ops(args.runs)
    print(json.dumps(report["ops_vs_pydensecrf_and_cpp"], indent=1))
    report["crf_argmax_agreement_voc_sample"] = agreement_on_voc_sample()
    print(report["crf_argmax_agreement_voc_sample"])
    report["coco_shaped_crf"] = bench_coco(args.coco_images)
    print(json.dumps(report["coco_shaped_crf"], indent=1))
    report["machine"]["load_average_end"] = os.getloadavg()
    write_json(OUT, report)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    if "OMP_WAIT_POLICY" not in os.environ:  # as benchmarks/energy_loss.py: no spinning OpenMP threads
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    main()
