"""Reliable region mining (paper eq. 4-7, Algorithm 1 lines 4-7): CAM + dense CRF -> sparse pseudo labels.

Two rules, picked by MiningParams.rule (rrm.settings.MINING_RULES):
- "paper": eq. 4-7 as printed — one CRF on [(1 - max P_fg)^gamma, P_fg]; I_cam keeps, per class
  (background included), the alpha_ratio most confident pixels of that class's argmax region;
  I_final = I_cam where it agrees with the CRF argmax, else 255.
- "code": the rule the authors' released code runs (two CRFs with background exponents gamma_low and
  gamma_high, CAM-, background- and CRF-confidence tests; see MiningParams).

Class ids: 0 background, c + 1 for CAM channel c; 255 = unreliable / unlabelled.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from rrm.data.classes import IGNORE_INDEX
from rrm.method.crf import dense_crf, dense_crfs
from rrm.settings import CRFParams, MiningParams

if TYPE_CHECKING:  # torch stays out of the CRF workers, which import this module to mine an image
    from torch import Tensor

CRFJob = tuple[np.ndarray, np.ndarray, CRFParams]
Prepared = tuple[np.ndarray, np.ndarray, np.ndarray]  # image, present-class CAMs, class ids


def as_numpy(x: np.ndarray | Tensor) -> np.ndarray:
    """A torch tensor (any device) or an array-like as a numpy array."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)  # a torch tensor


def prepare(image: np.ndarray, cam_norm: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> Prepared:
    """Validate one image's inputs; return (image, present-class CAMs (K-1, H, W), class ids (K,)): the
    form crf_jobs and mine_prepared take."""
    cam_norm, labels = as_numpy(cam_norm).astype(np.float32, copy=False), as_numpy(labels)
    if cam_norm.ndim != 3:
        raise ValueError(f"cam_norm must be (C, H, W), C foreground classes, got shape {cam_norm.shape}")
    if labels.shape != cam_norm.shape[:1]:
        raise ValueError(f"labels must be ({cam_norm.shape[0]},) to match cam_norm, got {labels.shape}")
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.shape != (*cam_norm.shape[1:], 3)
    ):
        raise ValueError(
            f"image must be a uint8 array of shape {(*cam_norm.shape[1:], 3)} to match cam_norm, got "
            f"{getattr(image, 'shape', type(image))} {getattr(image, 'dtype', '')}"
        )
    present = np.flatnonzero(labels > 0.5)
    ids = np.concatenate([[0], present + 1]).astype(np.uint8)
    return np.ascontiguousarray(image), cam_norm[present], ids


def _with_background(fg: np.ndarray, gamma: float) -> np.ndarray:
    """[P_bg, P_fg] with P_bg = (1 - max_c P_fg)^gamma (eq. 4 as implemented), (K, H, W) float32."""
    peak = fg.max(axis=0) if len(fg) else np.zeros(fg.shape[1:], np.float32)
    bg = np.clip(1.0 - peak, 0.0, None) ** gamma
    return np.concatenate([bg[None], fg]).astype(np.float32)


def crf_jobs(image: np.ndarray, fg: np.ndarray, params: MiningParams) -> list[CRFJob]:
    """The dense-CRF jobs one image needs (image, fg: `prepare`'s output): paper rule [gamma]; code rule
    [gamma_low, gamma_high]. Each job is (image (H, W, 3) uint8, probs (K, H, W) float32 over
    [bg, present classes], CRFParams)."""
    gammas = (params.gamma,) if params.rule == "paper" else (params.gamma_low, params.gamma_high)
    return [(image, _with_background(fg, g), params.crf) for g in gammas]


def _top_fraction(values: np.ndarray, region: np.ndarray, ratio: float) -> np.ndarray:
    """Mask of the ceil(ratio * n) largest `values` inside `region` (n = region size).

    Ties at the cut are broken by raster order (earlier pixel first), so the count is exact; the
    ceiling keeps at least one pixel of every non-empty class. round() guards 0.7 * 10 = 7.0000001.
    """
    index = np.flatnonzero(region)
    keep = math.ceil(round(ratio * index.size, 9))
    chosen = index[np.argsort(-values.ravel()[index], kind="stable")[:keep]]
    mask = np.zeros(region.size, dtype=bool)
    mask[chosen] = True
    return mask.reshape(region.shape)


def mine_paper(
    image: np.ndarray,
    cam_norm: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    params: MiningParams,
    crf_posterior: np.ndarray | None = None,
) -> np.ndarray:
    """Eq. 4-7. image (H, W, 3) uint8, cam_norm (C, H, W) normalised (absent classes 0), labels (C,).

    P = [(1 - max P_fg)^gamma, P_fg of present classes] (eq. 4); I_crf = argmax CRF(I, P) (eq. 5);
    I_cam = argmax P on the pixels above a per-class alpha (eq. 6), alpha being set so that exactly
    ceil(alpha_ratio * n_c) of the n_c pixels whose argmax is c stay labelled (background too);
    I_final = I_cam where I_cam == I_crf, else 255 (eq. 7). crf_posterior: the (K, H, W) result of
    this image's crf_jobs entry, if already computed. Returns (H, W) uint8 in {0..C, 255}.
    """
    return _mine_paper(*prepare(image, cam_norm, labels), params, crf_posterior)


def _mine_paper(
    image: np.ndarray, fg: np.ndarray, ids: np.ndarray, params: MiningParams, crf_posterior: np.ndarray | None
) -> np.ndarray:
    probs = _with_background(fg, params.gamma)
    if crf_posterior is None:
        crf_posterior = dense_crf(image, probs, params.crf)
    _check_posterior(crf_posterior, probs.shape, "crf_posterior")
    cam_label, reliable = _confident_cam_label(probs, params.alpha_ratio)
    keep = reliable & (cam_label == crf_posterior.argmax(axis=0))
    return np.where(keep, ids[cam_label], IGNORE_INDEX).astype(np.uint8)


def _confident_cam_label(probs: np.ndarray, alpha_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 6: argmax of P (K, H, W) and the mask of each label's top alpha_ratio pixels by max P."""
    cam_label, confidence = probs.argmax(axis=0), probs.max(axis=0)
    reliable = np.zeros(cam_label.shape, dtype=bool)
    for k in range(len(probs)):
        reliable |= _top_fraction(confidence, cam_label == k, alpha_ratio)
    return cam_label, reliable


def mine_cam_only(cams: Tensor | np.ndarray, labels: Tensor | np.ndarray, params: MiningParams,
                  roi: np.ndarray | None = None) -> np.ndarray:
    """The "CAM" row of the paper's Table 2: eq. 6 alone (top alpha_ratio of each label's pixels of
    [(1 - max P_fg)^gamma, P_fg]), no CRF. cams (N, C, H, W) normalised, labels (N, C), roi (N, H, W)
    bool (False -> 255). Returns (N, H, W) uint8 in {0..C, 255}.
    """
    cams_np, labels_np = as_numpy(cams).astype(np.float32, copy=False), as_numpy(labels)
    out = np.full(cams_np.shape[:1] + cams_np.shape[2:], IGNORE_INDEX, dtype=np.uint8)
    for n in range(len(cams_np)):
        present = np.flatnonzero(labels_np[n] > 0.5)
        ids = np.concatenate([[0], present + 1]).astype(np.uint8)
        cam_label, reliable = _confident_cam_label(_with_background(cams_np[n][present], params.gamma),
                                                   params.alpha_ratio)
        out[n] = np.where(reliable, ids[cam_label], IGNORE_INDEX)
    if roi is not None:
        out[~as_numpy(roi).astype(bool)] = IGNORE_INDEX
    return out


def mine_code(
    image: np.ndarray,
    cam_norm: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    params: MiningParams,
    crf_posteriors: tuple[np.ndarray, np.ndarray] | list[np.ndarray] | None = None,
) -> np.ndarray:
    """The authors' implemented rule. Shapes as mine_paper; crf_posteriors = (low, high), each (K, H, W).

    - CAM label map: argmax of [(1 - max P_fg)^gamma_high, P_fg].
    - CRF label: argmax of the gamma_low CRF with its background set to 255, then 0 wherever the
      gamma_high CRF's argmax is background.
    - CAM-confident, only for the labels present in the gamma_low CRF's argmax (background included
      only if it appears there): for a class c, pixels whose CAM argmax is c and P_fg^c > cam_min, of
      those the ones strictly above the value at sorted index int(n * (1 - alpha_ratio)) (the top
      alpha_ratio); for background, pixels whose CAM argmax is background and its score > bg_confident.
      A class the CRF wiped out thus keeps none of its CAM region. A class in the CRF argmax without
      any pixel above cam_min is skipped (the released code raises IndexError there).
    - CRF-confident: max of [gamma_high background posterior, gamma_low class posteriors] >= crf_confident.
    - Final: the CRF label where CAM- and CRF-confident, 255 elsewhere. Returns (H, W) uint8.
    """
    return _mine_code(*prepare(image, cam_norm, labels), params, crf_posteriors)


def _mine_code(
    image: np.ndarray,
    fg: np.ndarray,
    ids: np.ndarray,
    params: MiningParams,
    crf_posteriors: tuple[np.ndarray, np.ndarray] | list[np.ndarray] | None,
) -> np.ndarray:
    if crf_posteriors is None:  # both CRFs share their kernels (same image, same labels)
        crf_posteriors = dense_crfs(
            image, [_with_background(fg, g) for g in (params.gamma_low, params.gamma_high)], params.crf
        )
    if len(crf_posteriors) != 2:
        raise ValueError(f"crf_posteriors must be (low, high), got {len(crf_posteriors)} arrays")
    low, high = crf_posteriors
    for name, post in (("crf_posteriors[0]", low), ("crf_posteriors[1]", high)):
        _check_posterior(post, (len(ids), *fg.shape[1:]), name)

    cam_all = _with_background(fg, params.gamma_high)
    cam_label = cam_all.argmax(axis=0)
    low_label, high_label = low.argmax(axis=0), high.argmax(axis=0)
    crf_label = np.where(low_label == 0, IGNORE_INDEX, ids[low_label])
    crf_label[high_label == 0] = 0

    cam_sure = np.zeros(cam_label.shape, dtype=bool)
    for k in np.unique(low_label):  # the labels the gamma_low CRF kept, not the image-level ones
        if k == 0:
            cam_sure |= (cam_label == 0) & (cam_all[0] > params.bg_confident)
            continue
        values = np.where(cam_label == k, cam_all[k], 0.0)
        ranked = np.sort(values[values > params.cam_min])
        if ranked.size:  # none above cam_min: nothing of this class is CAM-confident
            cutoff = ranked[int(ranked.size * (1.0 - params.alpha_ratio))]
            cam_sure |= values > cutoff
    crf_sure = np.concatenate([high[:1], low[1:]]).max(axis=0) >= params.crf_confident
    return np.where(cam_sure & crf_sure, crf_label, IGNORE_INDEX).astype(np.uint8)


def _check_posterior(posterior: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(posterior, np.ndarray) or posterior.shape != tuple(shape):
        raise ValueError(
            f"{name} must be a {tuple(shape)} array over [background, present classes], "
            f"got {getattr(posterior, 'shape', type(posterior))}"
        )


def mine_prepared(
    image: np.ndarray,
    fg: np.ndarray,
    ids: np.ndarray,
    params: MiningParams,
    crf_posteriors: list[np.ndarray] | None = None,
) -> np.ndarray:
    """One image's rule on `prepare`'s output; runs its CRFs here if crf_posteriors is None (a pool worker
    runs this for a whole image, see `rrm.engine.mining`)."""
    if params.rule == "paper":
        return _mine_paper(image, fg, ids, params, None if crf_posteriors is None else crf_posteriors[0])
    return _mine_code(image, fg, ids, params, crf_posteriors)
