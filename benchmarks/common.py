"""What the benchmark scripts share: the VOC sample photos they run on, timing, machine facts, reports.

The scripts import it as `from common import ...` (Python puts a script's own folder first on sys.path).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydensecrf.densecrf as dcrf
import torch
import torch.nn.functional as F
from PIL import Image
from pydensecrf.utils import unary_from_softmax

from rrm.data.classes import IGNORE_INDEX
from rrm.io import load_image, load_mask, write_json
from rrm.method.cam import normalize_cam
from rrm.method.energy_loss import dense_energy_loss
from rrm.settings import EnergyParams, Params, load_settings

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "reports" / "bench"
# RRM_VOC_SAMPLE: where ../shared does not travel (the lent GPU machine gets a copy inside the repo)
VOC_SAMPLE = Path(os.environ.get("RRM_VOC_SAMPLE", REPO.parent / "shared" / "data" / "voc2012-sample"))
NAMES = ("2007_000063", "2007_000364", "2007_000392", "2007_000768")


def _photo(name: str) -> tuple[np.ndarray, np.ndarray]:
    """One VOC sample photo, (H, W, 3) uint8, and its mask, (H, W) uint8 (255 = void)."""
    return (load_image(VOC_SAMPLE / "JPEGImages" / f"{name}.jpg"),
            load_mask(VOC_SAMPLE / "SegmentationClass" / f"{name}.png"))


def resized_batch(size: int, names: tuple[str, ...] = NAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos resized to size x size: images (N, 3, S, S) float 0..255, masks (N, S, S) long."""
    images, masks = [], []
    for name in names:
        image, mask = _photo(name)
        images.append(np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)))
        masks.append(np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST)).astype(np.int64))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float(), torch.from_numpy(np.stack(masks))


def crop_batch(crop: int, names: tuple[str, ...] = NAMES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre crops padded to crop x crop, as a training batch: images (N, crop, crop, 3) uint8, masks
    (N, crop, crop) (padding 255), roi (N, crop, crop) bool (False on the padding)."""
    images = np.zeros((len(names), crop, crop, 3), np.uint8)
    masks = np.full((len(names), crop, crop), IGNORE_INDEX, np.uint8)
    roi = np.zeros((len(names), crop, crop), bool)
    for n, name in enumerate(names):
        image, mask = _photo(name)
        h, w = min(crop, image.shape[0]), min(crop, image.shape[1])
        y, x = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
        images[n, :h, :w], masks[n, :h, :w] = image[y:y + h, x:x + w], mask[y:y + h, x:x + w]
        roi[n, :h, :w] = True
    return images, masks, roi


def fake_cams(masks: np.ndarray, seed: int = 0, sigma: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """CAMs made from ground truth (blurred one-hot + uniform noise, normalised per class as in eq. 3), so the
    CRFs see realistic label counts and shapes: (N, 20, H, W) and labels (N, 20)."""
    target = torch.from_numpy(masks.astype(np.int64))
    onehot = torch.stack([(target == c + 1).float() for c in range(20)], dim=1)
    labels = (onehot.amax(dim=(2, 3)) > 0).float()
    radius = int(3 * sigma)
    kernel = torch.exp(-torch.arange(-radius, radius + 1).float() ** 2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(20, 1, 1, 1)
    blurred = F.conv2d(onehot, kernel, padding=(0, radius), groups=20)
    blurred = F.conv2d(blurred, kernel.transpose(2, 3), padding=(radius, 0), groups=20)
    noise = torch.rand(blurred.shape, generator=torch.Generator().manual_seed(seed))
    return normalize_cam(torch.relu(blurred + 0.3 * noise - 0.1), labels), labels


def smooth_logits(n: int, k: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, k, size, size) smooth random segmentation logits (bilinear upsampling of a coarse grid)."""
    coarse = max(size // 20, 2)
    logits = torch.randn(n, k, coarse, coarse, generator=torch.Generator().manual_seed(seed)) * 3
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)


class Inputs:
    """Real crops on the host and on the device: uint8 images, raw tensors, CAMs, labels (kept on the host,
    as the data loader gives them), roi, and smooth 21-class segmentation logits."""

    def __init__(self, crop: int, batch: int, device: torch.device) -> None:
        images, masks, roi = crop_batch(crop)
        reps = -(-batch // len(images))  # more than 4 images: repeat the crops
        self.images = np.concatenate([images] * reps)[:batch]
        masks, roi = np.concatenate([masks] * reps)[:batch], np.concatenate([roi] * reps)[:batch]
        self.cams, self.labels = fake_cams(masks)
        self.raw = torch.from_numpy(self.images).permute(0, 3, 1, 2).float().contiguous()
        self.roi = torch.from_numpy(roi)
        self.logits = smooth_logits(batch, 21, crop)
        self.device = device
        self.raw_d, self.cams_d = self.raw.to(device), self.cams.to(device)
        self.roi_d, self.logits_d = self.roi.to(device), self.logits.to(device)


def energy_loss(raw: torch.Tensor, probs: torch.Tensor, roi: torch.Tensor, target: torch.Tensor,
                energy: EnergyParams) -> torch.Tensor:
    """The dense energy loss with a params.yaml `train_onestep.energy` section's settings."""
    return dense_energy_loss(raw, probs, roi, target, sigma_rgb=energy.sigma_rgb,
                             sigma_xy=energy.sigma_xy, scale=energy.scale, weight=energy.weight)


def read_params(path: Path) -> Params:
    """params.yaml, validated, as the pipeline reads it."""
    return load_settings(path)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall time measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int, runs: int) -> dict[str, float]:
    """fn's median and minimum wall time in ms over `runs` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "runs_ms": times}


def machine_info(device: torch.device | None = None) -> dict[str, object]:
    """Facts a timing depends on: platform, CPU, thread count, load, OpenMP wait policy, versions, device."""
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), "") if cpuinfo.exists() else ""
    cuda = device is not None and device.type == "cuda"
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": model or platform.processor(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "nice": os.nice(0),
            "numpy": np.__version__, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if cuda else "cpu"}


def write_report(path: Path, report: dict) -> None:
    """Write the JSON report and say where."""
    write_json(path, report)
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is less sensitive to other load."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, dict[str, float]]:
    """Run each function `runs` times, interleaved, after one warm-up each; seconds per run."""
    for fn in fns.values():
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {
        name: {
            "median_s": statistics.median(w for w, _ in t),
            "min_s": min(w for w, _ in t),
            "median_cpu_s": statistics.median(c for _, c in t),
        }
        for name, t in times.items()
    }


def pydensecrf_one_iteration(images: np.ndarray, probs: np.ndarray, sxy: float, srgb: float) -> None:
    """The issue's yardstick: bilateral term + one mean-field iteration per image, sequentially."""
    for image, prob in zip(images, probs, strict=True):
        k, h, w = prob.shape
        crf = dcrf.DenseCRF2D(w, h, k)
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
        crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=image, compat=1)
        crf.inference(1)
