"""Class activation maps (paper eq. 1-3), the background score (eq. 4) and the CAM label baseline. C is the
dataset's number of foreground classes (VOC 20, COCO 80; rrm.data.datasets)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_cam_labels(cam: Tensor, labels: Tensor, name: str = "cam") -> None:
    if cam.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(cam.shape)}")
    if labels.shape != cam.shape[:2]:
        raise ValueError(f"labels must be (N, C) = {tuple(cam.shape[:2])}, got {tuple(labels.shape)}")


def normalize_cam(cam: Tensor, labels: Tensor, eps: float = 1e-5) -> Tensor:
    """Eq. 3: P_fg^c = M_cam^c / (max M_cam^c + eps), with absent classes zeroed.

    cam (N, C, H, W), already ReLU'd; labels (N, C) multi-hot. The label mask is the authors':
    a CAM of a class the image does not contain never enters mining. Returns (N, C, H, W).
    """
    _check_cam_labels(cam, labels)
    peak = cam.amax(dim=(2, 3), keepdim=True)
    mask = (labels > 0.5).to(cam.dtype)[:, :, None, None]
    return cam * mask / (peak + eps)


def multiscale_cam(
    model: torch.nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    flip: bool = False,
    scale1_cam: Tensor | None = None,
) -> Tensor:
    """Eq. 1-3 as the authors fuse scales: CAMs of rescaled copies averaged at feature-map size, then normalised.

    images (N, 3, H, W); model(x)["cam"] is (N, C, h, w) at any stride; labels (N, C).
    Scale s feeds the images resized bilinearly (align_corners=False) to (int(H*s), int(W*s)); each
    scale's CAM is resized bilinearly to the size of the scale-1 CAM (the first scale's when 1.0 is not
    among `scales`), the CAMs are averaged there, and the average is upsampled once to (H, W). With flip
    the horizontally flipped images are added too. scale1_cam: the (N, C, h, w) CAM of the training
    step's own scale-1 forward, reused (detached) instead of running scale 1 again, as the authors do.
    No scale builds a graph: the result only feeds mining. The model's train/eval mode is left as the
    caller set it. Returns the normalised multi-scale CAM, (N, C, H, W), without gradient.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive factors, got {tuple(scales)}")
    if scale1_cam is not None and 1.0 not in scales:
        raise ValueError(f"scale1_cam given but 1.0 is not among scales {tuple(scales)}")
    height, width = images.shape[-2:]

    def cam_at(x: Tensor, scale: float) -> Tensor:
        if scale != 1.0:
            size = (int(height * scale), int(width * scale))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return model(x)["cam"]

    with torch.no_grad():
        cams = []
        for scale in sorted(scales, key=lambda s: s != 1.0):  # scale 1 first: it sets the fusion size
            cam = scale1_cam.detach() if scale == 1.0 and scale1_cam is not None else cam_at(images, scale)
            if flip:
                cams.append(cam_at(images.flip(-1), scale).flip(-1))
            cams.append(cam)
        size = cams[0].shape[-2:]
        fused = torch.stack([_resize(cam, size) for cam in cams]).mean(0)
        return normalize_cam(_resize(fused, images.shape[-2:]), labels)


def _resize(cam: Tensor, size: torch.Size) -> Tensor:
    if cam.shape[-2:] == size:
        return cam
    return F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)


def background_score(fg: Tensor, gamma: float) -> Tensor:
    """Eq. 4 as the authors implement it: P_bg = (1 - max_c P_fg^c)^gamma.

    (The printed equation puts the exponent on the max; AffinityNet's and RRM's code raise the
    complement.) fg (N, C, H, W) normalised CAMs with absent classes zero -> (N, 1, H, W).
    """
    if fg.ndim != 4:
        raise ValueError(f"fg must be (N, C, H, W), got shape {tuple(fg.shape)}")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return (1.0 - fg.amax(dim=1, keepdim=True)).clamp(min=0.0) ** gamma


def cam_label_map(cam_norm: Tensor, labels: Tensor, *, bg_threshold: float) -> Tensor:
    """Pseudo labels straight from CAMs (the paper's "CAM" baseline of Table 2).

    argmax over [bg_threshold, P_fg of the present classes] per pixel; cam_norm (N, C, H, W),
    labels (N, C). Returns (N, H, W) int64 in 0..C (0 = background; ties go to background).
    """
    _check_cam_labels(cam_norm, labels, "cam_norm")
    present = (labels > 0.5)[:, :, None, None]
    fg = cam_norm.masked_fill(~present, float("-inf"))
    bg = torch.full_like(cam_norm[:, :1], bg_threshold)
    return torch.cat([bg, fg], dim=1).argmax(dim=1)
