"""Reliable region mining (eq. 4-7 and the authors' rule) on hand-made cases with known answers."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from authors_settings import MINING

from rrm.method.reliable import crf_jobs, mine_cam_only, mine_code, mine_paper, prepare

U = 255
# One 1x10 strip, class id 3 (CAM channel 2) on the left, background on the right.
FG = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.02, 0.001, 0.03, 0.0, 0.004], np.float32)


def _strip(fg: np.ndarray = FG) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cam = np.zeros((20, 1, fg.size), np.float32)
    cam[2, 0] = fg
    labels = np.zeros(20, np.float32)
    labels[2] = 1
    return np.zeros((1, fg.size, 3), np.uint8), cam, labels


def _posterior(fg_prob: list[float]) -> np.ndarray:
    """A 2-label (bg, class) posterior with the given class probability per pixel, shape (2, 1, W)."""
    p = np.array(fg_prob, np.float32)[None, None]
    return np.concatenate([1 - p, p])


def test_paper_rule_keeps_ceil_fraction_per_class() -> None:
    # Paper scores P = [(1 - fg)^4, fg]: pixels 0-4 are class 3 (n=5), 5-9 background (n=5) with
    # scores .922, .996, .885, 1.0, .984. The CRF agrees everywhere, so I_final = I_cam.
    image, cam, labels = _strip()
    agree = _posterior([0.9] * 5 + [0.1] * 5)
    # alpha_ratio 0.4: ceil(0.4 * 5) = 2 per class -> class pixels 0, 1; background pixels 8, 6
    got = mine_paper(image, cam, labels, replace(MINING, rule="paper", alpha_ratio=0.4), agree)
    assert got.tolist() == [[3, 3, U, U, U, U, 0, U, 0, U]]
    # alpha_ratio 0.5: ceil(2.5) = 3 per class -> also pixel 2 and the 3rd-best background pixel 9
    got = mine_paper(image, cam, labels, replace(MINING, rule="paper", alpha_ratio=0.5), agree)
    assert got.tolist() == [[3, 3, 3, U, U, U, 0, U, 0, 0]]
    # eq. 7: where the CRF disagrees (pixel 0 -> background) the pixel becomes unreliable
    disagree = _posterior([0.2] + [0.9] * 4 + [0.1] * 5)
    got = mine_paper(image, cam, labels, replace(MINING, rule="paper", alpha_ratio=1.0), disagree)
    assert got.tolist() == [[U, 3, 3, 3, 3, 0, 0, 0, 0, 0]]


def test_paper_rule_exact_count_with_ties_and_random_maps() -> None:
    image, cam, labels = _strip(np.array([0.9] * 5 + [0.0] * 5, np.float32))
    got = mine_paper(image, cam, labels, replace(MINING, rule="paper"), _posterior([0.9] * 5 + [0.1] * 5))
    assert got.tolist() == [[3, 3, U, U, U, 0, 0, U, U, U]]  # ties: earlier pixels first

    rng = np.random.default_rng(0)
    cam = np.zeros((20, 17, 23), np.float32)
    labels = np.zeros(20, np.float32)
    labels[[1, 8, 14]] = 1
    cam[[1, 8, 14]] = rng.random((3, 17, 23))
    image = np.zeros((17, 23, 3), np.uint8)
    probs = crf_jobs(*prepare(image, cam, labels)[:2], replace(MINING, rule="paper"))[0][1]
    argmax, ids = probs.argmax(0), np.array([0, 2, 9, 15])
    onehot = (argmax[None] == np.arange(4)[:, None, None]).astype(np.float32)  # a CRF that agrees
    for ratio in (0.1, 0.4, 0.7):
        got = mine_paper(image, cam, labels, replace(MINING, rule="paper", alpha_ratio=ratio), onehot)
        for k, class_id in enumerate(ids):
            region = argmax == k
            kept = got == class_id
            assert kept.sum() == math.ceil(round(ratio * region.sum(), 9)), (ratio, class_id)
            assert not (kept & ~region).any()
            if kept.any() and (region & ~kept).any():  # the kept ones are the most confident ones
                assert probs[k][kept].min() >= probs[k][region & ~kept].max()


def test_code_rule_hand_case() -> None:
    # gamma_high scores (1 - fg)^32 of pixels 5-9: .52, .968, .377, 1.0, .880 -> bg-confident (> .8): 6, 8, 9.
    # Class pixels 0-4 (> cam_min): sorted [.75 .8 .85 .9 .95], cut at index int(5 * .6) = 3 -> value .9,
    # strictly above -> only pixel 0 (fewer than the paper's ceil rule keeps).
    image, cam, labels = _strip()
    low = _posterior([0.9] * 6 + [0.1] * 4)  # low-alpha CRF: class up to pixel 5
    high = _posterior([0.9] * 4 + [0.1] * 6)  # high-alpha CRF: background from pixel 4
    high[:, 0, 8] = [0.6, 0.4]  # pixel 8: CRF-unsure (max(high bg, low fg) = .6 < .8)
    low[:, 0, 8] = [0.7, 0.3]
    got = mine_code(image, cam, labels, replace(MINING, rule="code"), (low, high))
    assert got.tolist() == [[3, U, U, U, U, U, 0, U, U, 0]]

    # Thresholds opened up: final = CRF label except the class minimum (strictly-above cut at index 0).
    # CRF label: low's argmax with background -> 255, then high's background -> 0; pixel 7 (low says
    # background, high says class) keeps 255.
    low = _posterior([0.9] * 6 + [0.1] * 4)
    high = _posterior([0.9] * 4 + [0.1] * 3 + [0.9] + [0.1] * 2)
    open_params = replace(MINING, rule="code", alpha_ratio=1.0, cam_min=0.0, bg_confident=0.0, crf_confident=0.0)
    got = mine_code(image, cam, labels, open_params, (low, high))
    assert got.tolist() == [[3, 3, 3, 3, U, 0, 0, U, 0, 0]]


def test_rules_differ_on_weak_background() -> None:
    # A flat image: CAM 0.05 on the left (weak background), a class ramp on the right. With gamma 4 the
    # left scores .81 and the paper keeps its top 40% as background; with gamma 32 it scores .19 < .8,
    # so the code rule labels no background at all.
    fg = np.zeros((12, 20), np.float32)
    fg[:, :10] = 0.05
    fg[:, 10:] = np.linspace(0.6, 1.0, 10)
    cam = np.zeros((20, 12, 20), np.float32)
    cam[6] = fg
    labels = np.zeros(20)
    labels[6] = 1
    image = np.full((12, 20, 3), 128, np.uint8)
    paper = mine_paper(image, cam, labels, replace(MINING, rule="paper"))
    code = mine_code(image, cam, labels, replace(MINING, rule="code"))
    assert (paper[:, :10] == 0).sum() == math.ceil(0.4 * 120) and (paper[:, 10:] == 7).sum() == 48
    assert not (code == 0).any() and (code[:, 10:] == 7).any()
    assert set(np.unique(code)) <= {7, U}


def test_params_and_inputs_are_validated() -> None:
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="alpha_ratio"):
            replace(MINING, rule="paper", alpha_ratio=bad)
    with pytest.raises(ValueError, match="rule"):
        replace(MINING, rule="papers")
    image, cam, labels = _strip()
    with pytest.raises(ValueError, match="image"):
        mine_paper(image[:, :5], cam, labels, replace(MINING, rule="paper"))
    with pytest.raises(ValueError, match="crf_posteriors"):
        mine_code(image, cam, labels, replace(MINING, rule="code"), (_posterior([0.5] * 10),))
    assert len(crf_jobs(*prepare(image, cam, labels)[:2], replace(MINING, rule="code"))) == 2


def test_cam_only_keeps_top_ratio_without_crf():
    """Table 2's CAM row: eq. 6 alone. One class whose CAM ramps 0.1..1.0 over 10 pixels of a 1x20 image."""
    cams = np.zeros((1, 20, 1, 20), np.float32)
    cams[0, 4, 0, 10:] = np.linspace(0.1, 1.0, 10)  # class 5; background score (1-cam)^4 wins elsewhere
    labels = np.zeros((1, 20), np.float32)
    labels[0, 4] = 1
    out = mine_cam_only(cams, labels, replace(MINING, rule="paper", alpha_ratio=0.4, gamma=4.0))
    fg = np.flatnonzero(out[0, 0] == 5)
    bg = np.flatnonzero(out[0, 0] == 0)
    cam = cams[0, 4, 0]
    fg_pixels = np.flatnonzero(cam > (1 - cam) ** 4)
    assert fg.tolist() == sorted(fg_pixels[np.argsort(-cam[fg_pixels])][: int(np.ceil(0.4 * len(fg_pixels)))])
    assert len(bg) == int(np.ceil(0.4 * (20 - len(fg_pixels))))
    roi = np.ones((1, 1, 20), bool)
    roi[0, 0, -1] = False
    assert mine_cam_only(cams, labels, replace(MINING, rule="paper"), roi=roi)[0, 0, -1] == 255
