"""Wu0409/DuPL: its training script (train_final_voc.py) calls no energy loss and no bilateral filter (its
reg_loss is a cross-entropy between augmented views); its dense-CRF call is the evaluation's
post-processing, tools/eval_seg_voc.py crf_proc:

    post_processor = DenseCRF(iter_max=10, pos_xy_std=1, pos_w=1, bi_xy_std=121, bi_rgb_std=5, bi_w=4)
    logit = F.interpolate(logit, size=(H, W), mode="bilinear", align_corners=False)
    prob = F.softmax(logit, dim=1)[0].numpy();  image = image.astype(np.uint8)
    prob = post_processor(image, prob)

``rrm.ops.dense_crf`` with the same settings replaces it: with backend="pydensecrf" it is the same
library call (equal to float32 rounding), with backend="torch" (no pydensecrf, CPU or GPU) the argmax
agrees on >= 99 % of each photo's pixels (the bound of tests/ops/test_ops_crf.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from noisy_photos import noisy_mask_probs
from repo_wrappers import UNIT_ROUNDOFF, DenseCRF

from rrm.io import load_image
from rrm.ops import dense_crf
from rrm.ops.crf import cpu_pool

pytest.importorskip("pydensecrf")

NAMES = ("2007_000063", "2007_000392")
SETTINGS = {"iterations": 10, "gauss_sxy": 1, "gauss_compat": 1, "bi_sxy": 121, "bi_srgb": 5, "bi_compat": 4}


def test_dupl_crf_post_processing(voc_sample: Path) -> None:
    post_processor = DenseCRF(iter_max=10, pos_xy_std=1, pos_w=1, bi_xy_std=121, bi_rgb_std=5, bi_w=4)
    for name in NAMES:
        image = load_image(voc_sample / "JPEGImages" / f"{name}.jpg").astype(np.float32)
        H, W, _ = image.shape  # noqa: N806
        _, probs, _ = noisy_mask_probs(voc_sample, [name], (H // 8, W // 8), seed=5)
        logit = torch.log(probs)  # the saved multi-scale logits, at the network's size
        logit = F.interpolate(logit, size=(H, W), mode="bilinear", align_corners=False)
        prob = F.softmax(logit, dim=1)[0].numpy()
        image = image.astype(np.uint8)
        theirs = post_processor(image, prob)

        images = torch.from_numpy(image).permute(2, 0, 1)[None]
        with cpu_pool(0) as pool:
            same_library = dense_crf(images, torch.from_numpy(prob)[None], backend="pydensecrf", pool=pool, **SETTINGS)
        np.testing.assert_allclose(same_library[0].numpy(), theirs, rtol=0, atol=8 * UNIT_ROUNDOFF)
        lattice = dense_crf(images, torch.from_numpy(prob)[None], backend="torch", **SETTINGS)
        agreement = (lattice[0].argmax(0).numpy() == theirs.argmax(0)).mean()
        assert agreement >= 0.99, (name, agreement)
        assert (theirs.argmax(0) != prob.argmax(0)).mean() > 0.05  # the CRF changes the labelling
