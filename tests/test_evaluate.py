"""Split-level evaluation: the network's work and the pool's CRFs overlap, and nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rrm.crf import CRFParams, CRFPool, dense_crf
from rrm.evaluate import cams_and_reliable, predictions
from rrm.inference import predict_probs
from rrm.models.rrm_net import build_rrm
from rrm.reliable import MiningParams, mine_batch


def _samples(n: int) -> list[dict]:
    """Images with a bright square on noise (sizes differ, as in VOC); labels name one or two classes."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        h, w = 40 + 4 * i, 48 - 2 * i
        image = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        image[8:24, 10:30] = (200, 40 + 30 * i, 60)
        labels = np.zeros(20, np.float32)
        labels[[i % 20, (3 * i + 1) % 20][: 1 + i % 2]] = 1
        samples.append({"name": f"img{i}", "image": image, "mask": None, "labels": labels})
    return samples


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_rrm(width=0.0625).eval()


def test_predictions_overlapped_with_pool_equal_inline_and_keep_order(model: torch.nn.Module) -> None:
    samples, crf = _samples(5), CRFParams(iterations=3)
    inline = list(predictions(model, samples, scales=[1.0], flip=False, crf=crf, pool=CRFPool(0),
                              device=torch.device("cpu"), desc="inline", chunk=2))
    with CRFPool(2) as pool:  # chunks of 2 over 5 images: the last chunk is partial
        pooled = list(predictions(model, samples, scales=[1.0], flip=False, crf=crf, pool=pool,
                                  device=torch.device("cpu"), desc="pooled", chunk=2))
    assert [s["name"] for s, _, _ in pooled] == [s["name"] for s in samples]
    for (_, pred_a, ref_a), (_, pred_b, ref_b) in zip(inline, pooled, strict=True):
        np.testing.assert_array_equal(pred_a, pred_b)
        np.testing.assert_array_equal(ref_a, ref_b)
    # each refined label is its own image's CRF of its own softmax
    last = samples[-1]
    probs = predict_probs(model, last["image"]).numpy()
    np.testing.assert_array_equal(pooled[-1][1], probs.argmax(0))
    np.testing.assert_array_equal(pooled[-1][2], dense_crf(last["image"], probs, crf).argmax(0))


def test_predictions_without_crf_yield_no_refinement(model: torch.nn.Module) -> None:
    out = list(predictions(model, _samples(3), scales=[1.0], flip=False, crf=None, pool=CRFPool(0),
                           device=torch.device("cpu"), desc="plain", chunk=2))
    assert len(out) == 3 and all(refined is None for _, _, refined in out)


def test_cams_and_reliable_overlapped_equal_one_image_at_a_time(model: torch.nn.Module) -> None:
    samples, mining = _samples(3), MiningParams(rule="code")
    with CRFPool(2) as pool:
        pooled = list(cams_and_reliable(model, samples, scales=[1.0, 0.5], mining=mining, pool=pool,
                                        device="cpu"))
    assert [s["name"] for s, _, _ in pooled] == [s["name"] for s in samples]
    for sample, cam, reliable in pooled:
        assert cam.shape == (1, 20, *sample["image"].shape[:2])
        want = mine_batch(sample["image"][None], cam, torch.from_numpy(sample["labels"])[None], mining, CRFPool(0))
        np.testing.assert_array_equal(reliable, want[0])
        assert set(np.unique(reliable)) <= {0, 255, *(np.flatnonzero(sample["labels"]) + 1)}
