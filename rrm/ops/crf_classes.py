"""The dense CRF over the classes that can win: background + each image's contenders, not all K.

A CRF's cost grows with its label count (pydensecrf filters every label's posterior through both
lattices at every iteration), so at COCO's K = 81 most of a test-time CRF is spent on classes that
nowhere come close to winning. :func:`kept_classes` picks, per image, background, every class that is
the argmax somewhere, and every class whose probability reaches ``min_prob`` somewhere; the CRF then
runs on those channels alone (:func:`pruned_crf`), exactly as the full CRF on a map holding only them
(the unary of a kept class is -log of its own probability; the maps are not renormalised).

Why the rule can be trusted: the CRF's logit of class l at pixel i is log p_i(l) plus the pairwise
term sum_m w_m (k_m Q)_i(l), which lies in [0, sum_m w_m r_m(i)] for any posterior Q (r_m: the
normalised kernel's row sum, about 1). With RRM's test-time kernels (compat 3 + 4) a class whose
probability stays below ``min_prob`` everywhere and which is nowhere the argmax can only win where the
leading class is less than e^7 ~ 1100 times likelier than it. Dropping it changes the kept classes'
normalisation by its (tiny) mass, so the argmax of the pruned CRF equals the full one's on all but a
few boundary pixels; benchmarks/crf_classes.py measures how few on real photos.

Where the labels are known the CRF already runs this way: reliable region mining builds its CRF over
[background, the image's classes] (:func:`rrm.method.reliable.crf_jobs`, and the packed
``valid`` labels of :mod:`rrm.method.reliable_torch` on the GPU). Test-time CRFs of predictions
(``evaluate``, ``export_pseudo``, ``rrm predict``) run over all K classes of the network.

Compact score maps (:func:`save_compact`, :func:`load_compact`): ``<name>.npz`` holding ``classes``
(the kept class ids, uint8) and ``probs`` (their posterior as uint8, round(255 Q)), zlib-compressed:
tens of kilobytes per 640x480 image where an (81, H, W) float32 map is 100 MB. Dropped classes read
back as probability 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rrm.io import atomic_write

MIN_PROB = 0.05  # default of kept_classes' min_prob: the `rrm crf --min-prob` option


def kept_classes(probs: np.ndarray, min_prob: float = MIN_PROB) -> np.ndarray:
    """Sorted class ids a pruned CRF keeps for one (K, H, W) score map: background (0), every class that
    is the argmax at some pixel, and every class whose probability reaches ``min_prob`` at some pixel.
    ``min_prob`` 0 keeps all K classes."""
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs: expected (K >= 1, H, W), got shape {probs.shape}")
    if not 0.0 <= min_prob <= 1.0:
        raise ValueError(f"min_prob must be in [0, 1], got {min_prob!r}")
    flat = probs.reshape(len(probs), -1)
    keep = flat.max(axis=1) >= min_prob
    # a class below min_prob everywhere can be the argmax only where every class is below min_prob
    low = flat.max(axis=0) < min_prob
    if low.any():
        keep[np.unique(flat[:, low].argmax(axis=0))] = True
    keep[0] = True
    return np.flatnonzero(keep)


def pruned_crf(image: np.ndarray, probs: np.ndarray, settings: dict,
               min_prob: float | None = MIN_PROB) -> tuple[np.ndarray, np.ndarray]:
    """pydensecrf's dense CRF of one image over its kept classes.

    image (H, W, 3) uint8; probs (K, H, W) probabilities; settings: CRFParams' keywords; min_prob None
    runs the full K. Returns (classes (K',) int, posterior (K', H, W) float32 over those classes, each
    pixel summing to 1): what ``rrm.method.crf.dense_crf(image, probs[classes], ...)`` returns.
    """
    from rrm.method import crf as method_crf

    classes = np.arange(len(probs)) if min_prob is None else kept_classes(probs, min_prob)
    return classes, method_crf.dense_crf(image, probs[classes], method_crf.CRFParams(**settings))


def expand(classes: np.ndarray, posterior: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, H, W) float32 map holding posterior's channels at ``classes`` and 0 elsewhere."""
    full = np.zeros((num_classes, *posterior.shape[1:]), np.float32)
    full[classes] = posterior
    return full


def label_map(classes: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """(H, W) uint8 class ids of the posterior's argmax."""
    return np.asarray(classes, np.uint8)[posterior.argmax(axis=0)]


def save_compact(path: str | Path, classes: np.ndarray, posterior: np.ndarray) -> None:
    """Write classes (uint8) and round(255 * posterior) (uint8) to a compressed .npz, atomically."""
    quantised = np.rint(np.clip(posterior, 0.0, 1.0) * 255).astype(np.uint8)
    atomic_write(path, lambda f: np.savez_compressed(f, classes=np.asarray(classes, np.uint8), probs=quantised))


def load_compact(path: str | Path, num_classes: int) -> np.ndarray:
    """(num_classes, H, W) float32 probabilities from a save_compact file (dropped classes 0; values
    within 1/510 of the saved posterior)."""
    with np.load(path, allow_pickle=False) as data:
        classes, quantised = data["classes"], data["probs"]
    if quantised.ndim != 3 or len(classes) != len(quantised) or (len(classes) and classes.max() >= num_classes):
        raise ValueError(f"{path}: classes {classes.tolist()} do not fit probs {quantised.shape} "
                         f"and {num_classes} classes")
    return expand(classes, quantised.astype(np.float32) / 255, num_classes)
