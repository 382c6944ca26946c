"""The authors' training-time CAM (SegNet.forward, compute_cam_up and the normalisation before mining)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def authors_cam(forward_cam, x: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    """forward_cam: images -> (N, 20, h, w) ReLU'd CAM; x (N, 3, H, W) normalised crops; label (N, 20).

    Scales 0.5, 1.5, 2.0 fed at (int(H*s), int(W*s)); their CAMs resized to the scale-1 CAM's size and
    the four averaged there; the average upsampled to the crop, masked by the labels, and each class
    divided by its own maximum + 1e-5. Returns (N, 20, H, W) float32.
    """
    input_size_h, input_size_w = x.size()[2], x.size()[3]
    x2 = F.interpolate(x, size=(int(input_size_h * 0.5), int(input_size_w * 0.5)), mode='bilinear',
                       align_corners=False)
    x3 = F.interpolate(x, size=(int(input_size_h * 1.5), int(input_size_w * 1.5)), mode='bilinear',
                       align_corners=False)
    x4 = F.interpolate(x, size=(int(input_size_h * 2), int(input_size_w * 2)), mode='bilinear',
                       align_corners=False)
    with torch.no_grad():
        cam1 = forward_cam(x)
        cam2 = forward_cam(x2)
        cam3 = forward_cam(x3)
        cam4 = forward_cam(x4)
    size = (int(cam1.shape[2]), int(cam1.shape[3]))
    cam2 = F.interpolate(cam2, size=size, mode='bilinear', align_corners=False)
    cam3 = F.interpolate(cam3, size=size, mode='bilinear', align_corners=False)
    cam4 = F.interpolate(cam4, size=size, mode='bilinear', align_corners=False)
    cam = (cam1 + cam2 + cam3 + cam4) / 4

    b = x.shape[0]
    cam_up = F.interpolate(cam, (input_size_h, input_size_w), mode='bilinear', align_corners=False)
    cam_up = cam_up * label.clone().view(b, 20, 1, 1)
    cam_up = cam_up.cpu().data.numpy()
    out = np.zeros_like(cam_up)
    for i in range(b):
        out[i] = cam_up[i] / (np.max(cam_up[i], (1, 2), keepdims=True) + 1e-5)
    return out
