"""The authors' reliable-region rule (compute_seg_label with _crf_with_alpha and crf_inference) and the
split of its labels for the background / foreground cross-entropies (compute_joint_loss).

One change to the released rule: a class in the low-alpha CRF's argmax with no CAM pixel above 0.1
makes the released code raise IndexError; here it is skipped (it gets no CAM-confident pixel).
"""

from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax


def crf_inference(img, probs, t=10, scale_factor=1, labels=21):
    h, w = img.shape[:2]
    n_labels = labels
    d = dcrf.DenseCRF2D(w, h, n_labels)
    unary = unary_from_softmax(probs)
    unary = np.ascontiguousarray(unary)
    img_c = np.ascontiguousarray(img)
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=3 / scale_factor, compat=3)
    d.addPairwiseBilateral(sxy=80 / scale_factor, srgb=13, rgbim=np.copy(img_c), compat=10)
    q = d.inference(t)
    return np.array(q).reshape((n_labels, h, w))


def _crf_with_alpha(ori_img, cam_dict, alpha):
    v = np.array(list(cam_dict.values()))
    bg_score = np.power(1 - np.max(v, axis=0, keepdims=True), alpha)
    bgcam_score = np.concatenate((bg_score, v), axis=0)
    crf_score = crf_inference(ori_img, bgcam_score, labels=bgcam_score.shape[0])
    n_crf_al = np.zeros([21, bg_score.shape[1], bg_score.shape[2]])
    n_crf_al[0, :, :] = crf_score[0, :, :]
    for i, key in enumerate(cam_dict.keys()):
        n_crf_al[key + 1] = crf_score[i + 1]
    return n_crf_al


def compute_seg_label(ori_img, cam_label, norm_cam):
    """ori_img (H, W, 3) uint8; cam_label (20,) multi-hot; norm_cam (20, H, W) float32 normalised.

    Returns (labels (H, W) in {0..20, 255}, notes): notes["wiped"] lists the image-level classes the
    low-alpha CRF removed while their CAM still had pixels above 0.1 (their CAM region stays 255),
    notes["skipped"] the classes skipped where the released code raises IndexError.
    """
    cam_label = cam_label.astype(np.uint8)
    cam_dict = {}
    cam_np = np.zeros_like(norm_cam)
    for i in range(20):
        if cam_label[i] > 1e-5:
            cam_dict[i] = norm_cam[i]
            cam_np[i] = norm_cam[i]

    bg_score = np.power(1 - np.max(cam_np, 0), 32)
    bg_score = np.expand_dims(bg_score, axis=0)
    cam_all = np.concatenate((bg_score, cam_np))
    _, bg_w, bg_h = bg_score.shape
    cam_img = np.argmax(cam_all, 0)

    crf_la = _crf_with_alpha(ori_img, cam_dict, 4)
    crf_ha = _crf_with_alpha(ori_img, cam_dict, 32)
    crf_la_label = np.argmax(crf_la, 0)
    crf_ha_label = np.argmax(crf_ha, 0)
    crf_label = crf_la_label.copy()
    crf_label[crf_la_label == 0] = 255

    single_img_classes = np.unique(crf_la_label)
    notes = {"wiped": [k + 1 for k in cam_dict
                       if k + 1 not in single_img_classes and (norm_cam[k] > 0.1).any()],
             "skipped": []}
    cam_sure_region = np.zeros([bg_w, bg_h], dtype=bool)
    for class_i in single_img_classes:
        if class_i != 0:
            class_not_region = (cam_img != class_i)
            cam_class = cam_all[class_i, :, :]
            cam_class[class_not_region] = 0
            cam_class_order = cam_class[cam_class > 0.1]
            cam_class_order = np.sort(cam_class_order)
            if cam_class_order.shape[0] == 0:  # the released code: IndexError
                notes["skipped"].append(int(class_i))
                continue
            confidence_pos = int(cam_class_order.shape[0] * 0.6)
            confidence_value = cam_class_order[confidence_pos]
            class_sure_region = (cam_class > confidence_value)
            cam_sure_region = np.logical_or(cam_sure_region, class_sure_region)
        else:
            class_not_region = (cam_img != class_i)
            cam_class = cam_all[class_i, :, :]
            cam_class[class_not_region] = 0
            class_sure_region = (cam_class > 0.8)
            cam_sure_region = np.logical_or(cam_sure_region, class_sure_region)

    cam_not_sure_region = ~cam_sure_region
    crf_label[crf_ha_label == 0] = 0
    crf_label_np = np.concatenate([np.expand_dims(crf_ha[0, :, :], axis=0), crf_la[1:, :, :]])
    crf_not_sure_region = np.max(crf_label_np, 0) < 0.8
    not_sure_region = np.logical_or(crf_not_sure_region, cam_not_sure_region)
    crf_label[not_sure_region] = 255
    return crf_label, notes


def ce_targets(seg_label):
    """compute_joint_loss's two cross-entropy targets from the mined labels (N, H, W): (bg, fg)."""
    seg_label_copy = np.asarray(seg_label).astype(np.int64)
    bg_label = seg_label_copy.copy()
    fg_label = seg_label_copy.copy()
    bg_label[seg_label_copy != 0] = 255
    fg_label[seg_label_copy == 0] = 255
    return bg_label, fg_label
