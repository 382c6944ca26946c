"""Reliable region mining on tensors, batched, on their device (MiningParams.crf_backend "torch").

The same rules as rrm.method.reliable (mine_code, mine_paper, mine_cam_only), with the dense CRF of
rrm.method.crf_torch instead of pydensecrf, so that a GPU training step mines without leaving the GPU.
rrm.method.reliable stays numpy-only (its CRF workers must not import torch); this module mirrors its rule
functions step for step, vectorised over the batch.

Layout: each image's present classes are packed into channels 1..K-1 (ascending class order, as
rrm.method.reliable's per-image arrays), channel 0 is background, and images with fewer classes are
padded with labels the CRF leaves out (``valid`` False). ``ids`` (N, K) maps channel -> class id.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rrm.data.classes import IGNORE_INDEX
from rrm.method.crf_torch import dense_crfs_torch
from rrm.settings import MiningParams


def _pack(cams: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """cams (N, C, H, W), labels (N, C) -> fg (N, K-1, H, W), ids (N, K) long, valid (N, K) bool.

    K = 1 + the largest present-class count of the batch. It is read from ``labels``; pass them on
    the CPU (as the data loader gives them) and no device sync happens here.
    """
    present = labels > 0.5
    width = int(present.sum(1).max()) if len(present) else 0
    classes = torch.arange(present.shape[1], device=present.device)
    # present classes first, in class order; absent ones after (cut off or padding)
    order = torch.argsort(torch.where(present, classes, classes + present.shape[1]), dim=1)[:, :width]
    fg_valid = present.gather(1, order)
    ids = torch.cat([torch.zeros_like(order[:, :1]), order + 1], 1).masked_fill_(
        torch.cat([torch.zeros_like(fg_valid[:, :1]), ~fg_valid], 1), 0)
    valid = torch.cat([torch.ones_like(fg_valid[:, :1]), fg_valid], 1)
    ids = ids.to(cams.device, non_blocking=True)
    valid = valid.to(cams.device, non_blocking=True)
    index = (ids[:, 1:] - 1).clamp_(min=0)[:, :, None, None].expand(-1, -1, *cams.shape[2:])
    fg = cams.float().gather(1, index) * valid[:, 1:, None, None]  # padding: all-zero scores
    return fg, ids, valid


def _with_background(fg: Tensor, gamma: float) -> Tensor:
    """[P_bg, P_fg] with P_bg = (1 - max_c P_fg)^gamma, (N, K, H, W); rrm.method.reliable._with_background."""
    peak = fg.amax(1, keepdim=True) if fg.shape[1] else fg.new_zeros(fg.shape[0], 1, *fg.shape[2:])
    return torch.cat([(1.0 - peak).clamp_(min=0.0).pow_(gamma), fg], 1)


def _confident_cam_label(probs: Tensor, alpha_ratio: float) -> tuple[Tensor, Tensor]:
    """Eq. 6 (rrm.method.reliable._confident_cam_label): argmax of probs (N, K, H, W) and the mask of each
    label's ceil(alpha_ratio * n) most confident pixels, ties by raster order (stable sort)."""
    n, k, h, w = probs.shape
    confidence, cam_label = probs.max(1)
    labels = torch.arange(k, device=probs.device)[None, :, None]
    region = cam_label.view(n, 1, -1) == labels  # (N, K, HW)
    # the region's pixels first, most confident first; the rest (+inf) last
    key = torch.where(region, -confidence.view(n, 1, -1), torch.inf)
    order = torch.sort(key, dim=2, stable=True).indices
    rank = torch.empty_like(order).scatter_(2, order, torch.arange(h * w, device=probs.device).expand_as(order))
    keep = torch.round(region.sum(2, dtype=torch.float64) * alpha_ratio, decimals=9).ceil_()
    reliable = (region & (rank < keep[:, :, None])).any(1)
    return cam_label, reliable.view(n, h, w)


def _crf(images: Tensor, probs: list[Tensor], valid: Tensor, params: MiningParams) -> list[Tensor]:
    return dense_crfs_torch(images, probs, params.crf, valid=valid)


def _class_ids(ids: Tensor, channels: Tensor) -> Tensor:
    """(N, H, W) packed channel indices -> class ids (0 = background), through ids (N, K)."""
    return ids.gather(1, channels.flatten(1)).view_as(channels)


def _mine_paper(probs: Tensor, ids: Tensor, params: MiningParams, posterior: Tensor | None = None) -> Tensor:
    """rrm.method.reliable._mine_paper on a packed batch; probs: [P_bg, P_fg] with params.gamma, (N, K, H, W);
    posterior: the CRF's on those probs, or None for eq. 6 alone (rrm.method.reliable.mine_cam_only)."""
    cam_label, reliable = _confident_cam_label(probs, params.alpha_ratio)
    keep = reliable if posterior is None else reliable & (cam_label == posterior.argmax(1))
    return torch.where(keep, _class_ids(ids, cam_label), IGNORE_INDEX)


def _mine_code(fg: Tensor, ids: Tensor, params: MiningParams, low: Tensor, high: Tensor) -> Tensor:
    """rrm.method.reliable._mine_code on a packed batch; low / high: the two CRFs' (N, K, H, W) posteriors.

    As there, CAM-confident pixels come only from the labels in the gamma_low CRF's argmax, and a class
    there without a CAM pixel above cam_min is skipped (the released code raises IndexError)."""
    n, k, h, w = low.shape
    cam_all = _with_background(fg, params.gamma_high)
    cam_score, cam_label = cam_all.max(1)  # max() gives the first maximum, as numpy's argmax
    low_label, high_label = low.argmax(1), high.argmax(1)
    crf_label = torch.where(low_label == 0, IGNORE_INDEX, _class_ids(ids, low_label))
    crf_label = crf_label.masked_fill(high_label == 0, 0)

    # only the labels present in the gamma_low CRF's argmax get CAM-confident pixels, background included
    in_crf = (low_label.view(n, 1, -1) == torch.arange(k, device=fg.device)[None, :, None]).any(2)  # (N, K)
    cam_sure = (cam_label == 0) & (cam_all[:, 0] > params.bg_confident) & in_crf[:, :1, None]
    # per class: pixels labelled c with score > cam_min; keep those above the value at sorted index
    # int(count * (1 - alpha_ratio)) of that class's ascending scores
    fg_label = torch.arange(1, k, device=fg.device)[None, :, None]
    values = torch.where(cam_label.view(n, 1, -1) == fg_label, cam_all[:, 1:].flatten(2), 0.0)
    candidate = values > params.cam_min
    count = candidate.sum(2)
    ranked = torch.sort(torch.where(candidate, values, -torch.inf), dim=2).values  # candidates last
    at = h * w - count + (count.to(torch.float64) * (1.0 - params.alpha_ratio)).long()
    cutoff = ranked.gather(2, at.clamp_(max=h * w - 1)[:, :, None])
    # no candidate, or a class the CRF wiped out: none confident
    cutoff = cutoff.masked_fill_(((count == 0) | ~in_crf[:, 1:])[:, :, None], torch.inf)
    cam_sure |= (values > cutoff).any(1).view(n, h, w)
    crf_sure = torch.cat([high[:, :1], low[:, 1:]], 1).amax(1) >= params.crf_confident
    return torch.where(cam_sure & crf_sure, crf_label, IGNORE_INDEX)


def _check(images: Tensor, cams: Tensor, labels: Tensor, roi: Tensor | None) -> None:
    if cams.dim() != 4 or images.shape != (cams.shape[0], 3, *cams.shape[2:]):
        raise ValueError(f"images (N, 3, H, W) and cams (N, C, H, W) must match, got {tuple(images.shape)} "
                         f"and {tuple(cams.shape)}")
    if labels.shape != cams.shape[:2]:
        raise ValueError(f"labels must be {tuple(cams.shape[:2])}, got {tuple(labels.shape)}")
    if roi is not None and roi.shape != (cams.shape[0], *cams.shape[2:]):
        raise ValueError(f"roi must be (N, H, W) = {(cams.shape[0], *cams.shape[2:])}, got {tuple(roi.shape)}")


def _apply_roi(out: Tensor, roi: Tensor | None) -> Tensor:
    return out if roi is None else out.masked_fill(~roi.to(out.device, torch.bool), IGNORE_INDEX)


def mine_batch_torch(images: Tensor, cams: Tensor, labels: Tensor, params: MiningParams,
                     roi: Tensor | None = None) -> Tensor:
    """rrm.method.reliable.mine_batch with the torch CRF, on cams' device; both rules (params.rule).

    images (N, 3, H, W) RGB 0..255 (uint8 or float; rounded to integers as the pydensecrf path's
    uint8 images), cams (N, C, H, W) normalised, labels (N, C) (on the CPU to avoid a device sync,
    see _pack), roi (N, H, W) bool / 0-1 (False = crop padding -> 255). Each image's CRFs run over
    its own labels only; all the batch's CRFs share one lattice per kernel. Returns (N, H, W) long in
    {0..C, 255}.
    """
    _check(images, cams, labels, roi)
    with torch.no_grad():
        fg, ids, valid = _pack(cams, labels)
        rgb = images.to(fg.device).float().round().clamp_(0, 255)
        if params.rule == "paper":
            probs = _with_background(fg, params.gamma)
            out = _mine_paper(probs, ids, params, _crf(rgb, [probs], valid, params)[0])
        else:
            probs = [_with_background(fg, g) for g in (params.gamma_low, params.gamma_high)]
            out = _mine_code(fg, ids, params, *_crf(rgb, probs, valid, params))
        return _apply_roi(out, roi)


def mine_cam_only_torch(cams: Tensor, labels: Tensor, params: MiningParams, roi: Tensor | None = None) -> Tensor:
    """rrm.method.reliable.mine_cam_only on cams' device (eq. 6 alone, no CRF). Returns (N, H, W) long."""
    with torch.no_grad():
        fg, ids, _ = _pack(cams, labels)
        return _apply_roi(_mine_paper(_with_background(fg, params.gamma), ids, params), roi)
