"""Training crops against an independent transcription of the authors' get_data_from_chunk_v2, on real photos:
identical normalised tensor, ROI and restored uint8 image for fixed scale, flip and crop offsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from reference.crop import authors_crop, resize_bilinear
from reference.photos import sample_photos

from rrm.data.transforms import crop_normalised, scale_flip

# (scale, flip, crop): crops larger than the scaled photo in one or both axes (padding) and smaller
CASES = [(0.7, False, 121), (1.0, True, 97), (1.3, True, 161), (0.93, False, 143), (1.17, True, 64)]


@pytest.mark.parametrize(("scale", "flip", "crop"), CASES)
def test_crop_equals_authors(voc_sample: Path, scale: float, flip: bool, crop: int) -> None:
    rng = np.random.default_rng(int(scale * 100) + crop)
    padded = 0
    for _, image, mask in sample_photos(voc_sample, count=8):
        h, w = int(image.shape[0] * scale), int(image.shape[1] * scale)
        draws = (int(rng.integers(abs(h - crop) + 1)), int(rng.integers(abs(w - crop) + 1)))
        want_image, want_raw, want_roi = authors_crop(image, scale, flip, crop, draws)
        scaled, scaled_mask = scale_flip(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask),
                                         scale=scale, flip=flip)
        ours = crop_normalised(scaled, scaled_mask, crop_size=crop, offsets=draws)
        assert torch.equal(ours["image"], torch.from_numpy(want_image))
        assert torch.equal(ours["raw"], torch.from_numpy(want_raw))
        assert torch.equal(ours["roi"], torch.from_numpy(want_roi))
        assert (ours["mask"][~ours["roi"]] == 255).all()
        if not want_roi.all():  # padding: 0 in normalised space, the ImageNet mean colour restored
            padded += 1
            assert (ours["image"][:, ~ours["roi"]] == 0).all()
            assert ours["raw"][:, ~ours["roi"]].T.unique(dim=0).tolist() == [[123, 116, 103]]
    assert padded >= (8 if crop >= 121 else 0)


def test_numpy_bilinear_is_torch_bilinear_without_antialiasing(voc_sample: Path) -> None:
    """The reference's cv2-style resize (written in numpy) and torch's bilinear agree to float64 precision."""
    _, image, _ = sample_photos(voc_sample, count=1)[0]
    for scale in (0.5, 0.7, 1.3, 2.0):
        h, w = int(image.shape[0] * scale), int(image.shape[1] * scale)
        ref = resize_bilinear(image.astype(np.float64), h, w)
        ours = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].double(),
                                               size=(h, w), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), ref, rtol=0, atol=1e-9)
