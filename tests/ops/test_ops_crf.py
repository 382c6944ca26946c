"""rrm.ops.dense_crf: the torch and pydensecrf backends agree on VOC photos (one signature)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from noisy_photos import noisy_mask_probs

from rrm.ops import dense_crf
from rrm.ops.crf import cpu_pool

pytest.importorskip("pydensecrf")

NAMES = ["2007_000063", "2007_000068", "2007_000392", "2007_000768"]
SIZE = (94, 125)  # (H, W): 500 x 375 photos downscaled 4x
SETTINGS = {  # RRM's mining CRF and its test-time CRF
    "mining": {},
    "evaluate": {"gauss_sxy": 3.0, "gauss_compat": 3.0, "bi_sxy": 83.0, "bi_srgb": 5.0, "bi_compat": 4.0},
}


def _batch(voc: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, probs, _ = noisy_mask_probs(voc, NAMES, SIZE, seed=1)
    return images, probs


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_backends_agree_on_99_percent_of_pixels(voc_sample: Path, name: str) -> None:
    images, probs = _batch(voc_sample)
    torch_q = dense_crf(images, probs, backend="torch", **SETTINGS[name])
    with cpu_pool(2) as pool:
        crf_q = dense_crf(images.numpy(), probs.numpy(), backend="pydensecrf", pool=pool, **SETTINGS[name])
    assert torch_q.shape == crf_q.shape == probs.shape and crf_q.dtype == torch_q.dtype == torch.float32
    torch.testing.assert_close(torch_q.sum(1), torch.ones(len(NAMES), *SIZE))
    agreement = (torch_q.argmax(1) == crf_q.argmax(1)).float().mean((1, 2))
    assert agreement.min() >= 0.99, agreement
    changed = (crf_q.argmax(1) != probs.argmax(1)).float().mean()
    assert changed > 0.05  # the CRF does change the labelling, so agreement is not trivial


def test_unknown_backend_and_bad_shapes_raise() -> None:
    probs = torch.full((1, 2, 4, 4), 0.5)
    with pytest.raises(ValueError, match="backend"):
        dense_crf(torch.zeros(1, 3, 4, 4), probs, backend="opencv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="^images: expected shape"):
        dense_crf(torch.zeros(1, 3, 4, 5), probs)
    with pytest.raises(ValueError, match="^probs: expected"):
        dense_crf(torch.zeros(1, 3, 4, 4), probs[0])
    with pytest.raises(TypeError, match="^probs: expected float probabilities, got torch.uint8"):
        dense_crf(torch.zeros(1, 3, 4, 4), probs.to(torch.uint8))
    with pytest.raises(TypeError, match="^images: expected a float or uint8 array, got torch.int64"):
        dense_crf(torch.zeros(1, 3, 4, 4, dtype=torch.long), probs)
