"""Training collate: shapes, one scale per batch, mean-colour padding and ROI, image-mask alignment under flips,
normalisation, PSA's per-image resize and colour jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from rrm.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize, normalize_raw
from rrm.data.transforms import TrainBatchCollate
from rrm.data.voc import image_labels

# Class -> colour; every channel >= 40 so that only padding has raw value 0.
COLOURS = {0: (110, 110, 110), 1: (200, 40, 40), 2: (40, 200, 40), 3: (40, 40, 200), 255: (240, 240, 240)}


def synthetic(height: int, width: int, name: str = "img") -> dict:
    """Left-right asymmetric blocks (1 | 2 over 3 | 0) with a void band; the image is the mask's colours."""
    mask = np.zeros((height, width), np.uint8)
    mask[: height // 2, : width // 3] = 1
    mask[: height // 2, width // 3:] = 2
    mask[height // 2:, : 2 * width // 3] = 3
    mask[height // 2 - 2: height // 2 + 2] = 255
    image = np.zeros((height, width, 3), np.uint8)
    for value, colour in COLOURS.items():
        image[mask == value] = colour
    return {"name": name, "image": image, "mask": mask, "labels": image_labels(mask)}


def classes_from_colours(raw: torch.Tensor) -> torch.Tensor:
    """(3, H, W) raw colours -> (H, W) class of the nearest COLOURS entry."""
    values = torch.tensor(list(COLOURS))
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
    distance = ((raw[None] - palette[:, :, None, None]) ** 2).sum(1)
    return values[distance.argmin(0)]


def uniform(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """(H, W) True where the (2r+1)^2 neighbourhood holds a single value (away from boundaries)."""
    x = mask.float()[None, None]
    size = 2 * radius + 1
    high = nnf.max_pool2d(x, size, stride=1, padding=radius)
    low = -nnf.max_pool2d(-x, size, stride=1, padding=radius)
    return (high == low)[0, 0]


def roi_extent(roi: torch.Tensor) -> tuple[int, int]:
    return int(roi.any(1).sum()), int(roi.any(0).sum())


def test_shapes_and_dtypes() -> None:
    torch.manual_seed(0)
    samples = [synthetic(75, 100, "a"), synthetic(100, 60, "b"), synthetic(50, 50, "c")]
    batch = TrainBatchCollate(crop_size=64)(samples)
    assert batch["image"].shape == batch["raw"].shape == (3, 3, 64, 64)
    assert batch["mask"].shape == batch["roi"].shape == (3, 64, 64)
    assert batch["image"].dtype == batch["raw"].dtype == batch["roi"].dtype == torch.float32
    assert batch["mask"].dtype == torch.int64 and batch["labels"].shape == (3, 20)
    assert batch["name"] == ["a", "b", "c"]
    np.testing.assert_array_equal(batch["labels"][0].numpy(), samples[0]["labels"])
    assert batch["raw"].min() >= 0 and batch["raw"].max() <= 255


def test_one_scale_per_batch_and_seeded() -> None:
    sizes = [(90, 60), (45, 80), (70, 70)]
    collate = TrainBatchCollate(crop_size=128, scale_range=(0.5, 1.5), flip=False)
    scales = []
    for seed in range(4):
        torch.manual_seed(seed)
        batch = collate([synthetic(h, w) for h, w in sizes])
        low, high = 0.0, np.inf  # interval of scales s with int(H * s) == observed size, for every sample
        for roi, (h, w) in zip(batch["roi"], sizes, strict=True):
            rows, cols = roi_extent(roi)
            assert roi.sum() == rows * cols  # the image is one rectangle inside the crop
            for observed, full in ((rows, h), (cols, w)):
                low, high = max(low, observed / full), min(high, (observed + 1) / full)
        assert low <= high, f"seed {seed}: samples were scaled differently"
        assert 0.5 - 1e-2 <= low and high <= 1.5 + 1e-2
        scales.append((low + high) / 2)
        torch.manual_seed(seed)
        again = collate([synthetic(h, w) for h, w in sizes])
        assert all(torch.equal(batch[k], again[k]) for k in ("raw", "mask", "roi"))
    assert max(scales) - min(scales) > 0.1  # different batches draw different scales


@pytest.mark.parametrize(("height", "width"), [(40, 50), (40, 200), (200, 30)])
def test_padding_is_the_imagenet_mean_and_roi_marks_real_pixels(height: int, width: int) -> None:
    """The authors normalise, then crop into zeros: padding is 0 normalised, (123, 116, 103) restored."""
    torch.manual_seed(1)
    collate = TrainBatchCollate(crop_size=64, scale_range=(1.0, 1.0))
    batch = collate([synthetic(height, width) for _ in range(4)])
    for image, raw, roi, mask in zip(batch["image"], batch["raw"], batch["roi"], batch["mask"], strict=True):
        padding = (image == 0).all(0)  # no COLOURS entry normalises to 0 in all three channels
        assert torch.equal(roi == 0, padding)
        assert (mask[padding] == 255).all()
        assert (raw[:, padding].T == torch.tensor([123.0, 116.0, 103.0])).all()
        assert set(roi.unique().tolist()) <= {0.0, 1.0}
        assert roi_extent(roi) == (min(height, 64), min(width, 64))
        assert roi.sum() == min(height, 64) * min(width, 64)


def test_image_and_mask_stay_aligned_under_scale_flip_crop() -> None:
    collate = TrainBatchCollate(crop_size=72, scale_range=(0.7, 1.3))
    checked = 0
    for seed in range(6):
        torch.manual_seed(seed)
        batch = collate([synthetic(80, 96), synthetic(60, 120), synthetic(100, 50)])
        for raw, roi, mask in zip(batch["raw"], batch["roi"], batch["mask"], strict=True):
            from_colours = classes_from_colours(raw)
            # compare away from class boundaries (resampling blends colours there) and inside the image
            inside = uniform(mask, 2) & uniform(roi, 2) & (roi == 1)
            assert inside.sum() > 0.3 * roi.sum()
            assert torch.equal(from_colours[inside], mask[inside])
            checked += int(inside.sum())
    assert checked > 20_000


def test_flip_happens_and_can_be_disabled() -> None:
    def top_left_classes(collate: TrainBatchCollate) -> list[int]:
        batch = collate([synthetic(40, 60) for _ in range(16)])
        found = []
        for roi, mask in zip(batch["roi"], batch["mask"], strict=True):
            rows, cols = torch.nonzero(roi, as_tuple=True)
            found.append(int(mask[rows.min(), cols.min()]))
        return found

    torch.manual_seed(0)
    flipped = top_left_classes(TrainBatchCollate(crop_size=64, scale_range=(1.0, 1.0)))
    assert set(flipped) == {1, 2}  # 1: as drawn (class 1 top-left), 2: mirrored
    torch.manual_seed(0)
    assert set(top_left_classes(TrainBatchCollate(crop_size=64, scale_range=(1.0, 1.0), flip=False))) == {1}


def test_normalisation_inverse_equals_raw() -> None:
    torch.manual_seed(2)
    batch = TrainBatchCollate(crop_size=48)([synthetic(50, 70), synthetic(30, 40)])
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    restored = (batch["image"] * std + mean) * 255  # raw: this, truncated to uint8 as the authors' astype
    assert ((restored - batch["raw"]) > -1e-4).all() and ((restored - batch["raw"]) < 1).all()
    assert torch.equal(batch["raw"], batch["raw"].floor())

    image = np.array([[[255, 0, 128]]], dtype=np.uint8)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(normalize(image)[:, 0, 0], torch.tensor(expected))
    torch.testing.assert_close(normalize(torch.from_numpy(image)), normalize(image))


def test_resize_long_draws_per_image_and_jitter_changes_colours() -> None:
    """PSA's classifier recipe: each image's long side drawn in [low, high]; ColorJitter moves colours."""
    samples = [synthetic(40, 60) for _ in range(8)]
    torch.manual_seed(0)
    plain = TrainBatchCollate(crop_size=64, resize_long=(20, 50))(samples)
    longs = [max(roi_extent(roi)) for roi in plain["roi"]]
    assert all(20 <= n <= 50 for n in longs) and len(set(longs)) > 2  # one draw per image
    assert (plain["mask"] == 255).all()  # labels only: the classifier has no masks
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)

    def off_palette(batch: dict) -> float:
        """Largest distance of a uniform-colour pixel to the nearest palette colour."""
        worst = 0.0
        for raw, roi in zip(batch["raw"], batch["roi"], strict=True):
            inside = uniform(classes_from_colours(raw), 2) & uniform(roi, 2) & (roi == 1)
            pixels = raw[:, inside].T
            worst = max(worst, float(torch.cdist(pixels, palette).min(1).values.max()))
        return worst

    assert off_palette(plain) <= 2.0  # bicubic resizing keeps flat colours (up to the uint8 truncation)
    torch.manual_seed(0)
    jittered = TrainBatchCollate(crop_size=64, resize_long=(20, 50), color_jitter=(0.3, 0.3, 0.3, 0.1))(samples)
    assert off_palette(jittered) > 10.0
    with pytest.raises(ValueError, match="resize_long"):
        TrainBatchCollate(crop_size=32, resize_long=(50, 20))


def test_missing_mask_becomes_void_and_bad_arguments() -> None:
    sample = synthetic(30, 30)
    sample["mask"] = None
    torch.manual_seed(0)
    batch = TrainBatchCollate(crop_size=40)([sample])
    assert (batch["mask"] == 255).all() and batch["roi"].sum() > 0
    with pytest.raises(ValueError, match="crop_size"):
        TrainBatchCollate(crop_size=0)
    with pytest.raises(ValueError, match="scale_range"):
        TrainBatchCollate(crop_size=32, scale_range=(1.3, 0.7))
    with pytest.raises(ValueError, match=r"image: expected \(H, W, 3\)"):
        normalize(np.zeros((4, 4), np.uint8))


def test_plain_torch_normalisation_is_bit_identical_to_torchvision() -> None:
    """rrm.data.normalize avoids importing torchvision; it must compute exactly what torchvision's does."""
    from torchvision.transforms.v2 import functional as F

    raw = torch.randint(0, 256, (2, 3, 17, 23)).float()
    expected = F.normalize(raw / 255.0, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    assert torch.equal(normalize_raw(raw), expected)
