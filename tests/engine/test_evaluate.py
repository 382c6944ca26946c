"""Split-level evaluation: the network's work and the pool's CRFs overlap, and nothing else changes."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from authors_settings import CRF, MINING

from rrm.engine.evaluate_cam import cams_and_reliable
from rrm.engine.inference import predict_probs, predict_probs_batch
from rrm.engine.mining import mine_batch
from rrm.engine.predictions import predictions
from rrm.method.crf import dense_crf
from rrm.method.crf_pool import CRFPool
from rrm.models.rrm_net import build_rrm


def _samples(n: int, same_size: int = 0) -> list[dict]:
    """Images with a bright square on noise, the first `same_size` of one size (they share a forward), the
    others of sizes that differ, as in VOC; labels name one or two classes."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        h, w = (40, 48) if i < same_size else (40 + 4 * i, 48 - 2 * i)
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
    samples, crf = _samples(6, same_size=3), replace(CRF, iterations=3)
    inline = list(predictions(model, samples, scales=[1.0], flip=False, crf=crf, pool=CRFPool(0),
                              device=torch.device("cpu"), desc="inline", chunk=2))
    with CRFPool(2) as pool:  # chunks: 2 + 1 of the same size, then one per size
        pooled = list(predictions(model, samples, scales=[1.0], flip=False, crf=crf, pool=pool,
                                  device=torch.device("cpu"), desc="pooled", chunk=2))
    assert [s["name"] for s, _, _ in pooled] == [s["name"] for s in samples]
    for (_, pred_a, ref_a), (_, pred_b, ref_b) in zip(inline, pooled, strict=True):
        np.testing.assert_array_equal(pred_a, pred_b)
        np.testing.assert_array_equal(ref_a, ref_b)
    # each label is its own image's softmax (batched or not) and its CRF
    for n in (1, 5):  # in a batched chunk; alone
        probs = predict_probs(model, samples[n]["image"]).numpy()
        np.testing.assert_array_equal(pooled[n][1], probs.argmax(0))
        np.testing.assert_array_equal(pooled[n][2], dense_crf(samples[n]["image"], probs, crf).argmax(0))


def test_batched_probs_equal_one_image_at_a_time(model: torch.nn.Module) -> None:
    images = [s["image"] for s in _samples(4, same_size=3)]
    batched = predict_probs_batch(model, images, scales=[1.0, 0.75], flip=True)
    for image, probs in zip(images, batched, strict=True):
        torch.testing.assert_close(probs, predict_probs(model, image, scales=[1.0, 0.75], flip=True),
                                   atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="tiny: image is 5x40"):
        predict_probs_batch(model, [images[0], np.zeros((40, 5, 3), np.uint8)], names=["ok", "tiny"])


def test_predictions_without_crf_yield_no_refinement(model: torch.nn.Module) -> None:
    out = list(predictions(model, _samples(3), scales=[1.0], flip=False, crf=None, pool=CRFPool(0),
                           device=torch.device("cpu"), desc="plain", chunk=2))
    assert len(out) == 3 and all(refined is None for _, _, refined in out)


def test_cams_and_reliable_overlapped_equal_one_image_at_a_time(model: torch.nn.Module) -> None:
    samples, mining = _samples(5, same_size=3), replace(MINING, rule="code")
    with CRFPool(2) as pool:
        pooled = list(cams_and_reliable(model, samples, scales=[1.0, 0.5], mining=mining, pool=pool,
                                        device="cpu", chunk=2))
    assert [s["name"] for s, _, _ in pooled] == [s["name"] for s in samples]
    for sample, cam, reliable in pooled:
        assert cam.shape == (1, 20, *sample["image"].shape[:2])
        want = mine_batch(sample["image"][None], cam, torch.from_numpy(sample["labels"])[None], mining, CRFPool(0))
        np.testing.assert_array_equal(reliable, want[0])
        assert set(np.unique(reliable)) <= {0, 255, *(np.flatnonzero(sample["labels"]) + 1)}


def test_evaluation_modules_import_without_torchvision() -> None:
    """torchvision's import pulls in torch._dynamo (~3 s): the evaluation stages must not pay it."""
    code = ("import sys, rrm.engine.evaluate, rrm.engine.evaluate_cam, rrm.method.crf, rrm.settings; "
            "print([m for m in ('torchvision', 'dvclive') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
