"""The authors' per-image training input (get_data_from_chunk_v2 with its RandomCrop), random draws fixed.

Steps as the released code runs them: float image resized to (int(W*s), int(H*s)) with cv2's bilinear
rule (half-pixel centres, no antialiasing; written out here with numpy), flipped, normalised channel by
channel in float64, copied into a float32 zero container, the ROI ("cropping") marking the copied
pixels, and the uint8 image rebuilt from the container as (x*std + mean)*255 in float32, truncated.
"""

from __future__ import annotations

import numpy as np

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _axis_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2 INTER_LINEAR along one axis: for each output index, (low index, high index, high weight)."""
    scale = src / dst
    pos = (np.arange(dst) + 0.5) * scale - 0.5
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.int64)
    low = np.minimum(low, src - 1)
    high = np.minimum(low + 1, src - 1)
    return low, high, pos - low


def resize_bilinear(img: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """(H, W, C) float64 -> (new_h, new_w, C), as cv2.resize(img, (new_w, new_h)) on a float image."""
    h, w = img.shape[:2]
    if (new_h, new_w) == (h, w):
        return img.copy()
    r0, r1, ry = _axis_weights(h, new_h)
    c0, c1, cx = _axis_weights(w, new_w)
    out = np.zeros((new_h, new_w, img.shape[2]), np.float64)
    for i in range(new_h):
        top = img[r0[i]] * (1 - ry[i]) + img[r1[i]] * ry[i]
        out[i] = top[c0] * (1 - cx)[:, None] + top[c1] * cx[:, None]
    return out


def authors_crop(img: np.ndarray, scale: float, flip: bool, crop_size: int, draws: tuple[int, int]):
    """img (H, W, 3) uint8 RGB; draws = the two random.randrange results (top, left).

    Returns (normalised crop (3, c, c) float32, restored image (3, c, c) uint8, cropping (c, c) bool).
    """
    img_temp = img.astype(np.float64)
    img_temp = resize_bilinear(img_temp, int(img.shape[0] * scale), int(img.shape[1] * scale))
    if flip:
        img_temp = np.fliplr(img_temp)
    img_temp = img_temp.copy()
    for c in range(3):
        img_temp[:, :, c] = (img_temp[:, :, c] / 255. - MEAN[c]) / STD[c]

    h, w = img_temp.shape[:2]
    ch, cw = min(crop_size, h), min(crop_size, w)
    w_space, h_space = w - crop_size, h - crop_size
    if w_space > 0:
        cont_left, img_left = 0, draws[1]
    else:
        cont_left, img_left = draws[1], 0
    if h_space > 0:
        cont_top, img_top = 0, draws[0]
    else:
        cont_top, img_top = draws[0], 0
    container = np.zeros((crop_size, crop_size, 3), np.float32)
    cropping = np.zeros((crop_size, crop_size), bool)
    container[cont_top:cont_top + ch, cont_left:cont_left + cw] = \
        img_temp[img_top:img_top + ch, img_left:img_left + cw]
    cropping[cont_top:cont_top + ch, cont_left:cont_left + cw] = True

    ori_temp = np.zeros_like(container)
    for c in range(3):
        ori_temp[:, :, c] = (container[:, :, c] * STD[c] + MEAN[c]) * 255.
    return container.transpose(2, 0, 1), ori_temp.astype(np.uint8).transpose(2, 0, 1), cropping
