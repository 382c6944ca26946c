"""rrm.ops.bilateral_filter against the authors' C++ filter values stored in energy_lattice_ref.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rrm.ops import DenseEnergyLoss, bilateral_filter, bilateralfilter, bilateralfilter_batch


def _inputs(reference, voc: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data, recipe = reference
    ids = [rec["id"] for rec in data["images"]]
    images = np.stack([recipe.load_image(str(voc), i) for i in ids])
    probs = np.stack([recipe.make_prob(i) for i in ids])
    return torch.from_numpy(images), torch.from_numpy(probs)


@pytest.fixture(scope="module")
def filtered(reference, voc_sample: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, probs = _inputs(reference, voc_sample)
    p = reference[0]["params"]
    return images, probs, bilateral_filter(images, probs, p["sigma_rgb"], p["sigma_xy"])


def test_values_at_stored_pixels_and_weighted_sums(reference, filtered) -> None:
    data = reference[0]
    images, probs, out = filtered
    assert out.dtype == torch.float32 and out.shape == probs.shape
    for n, rec in enumerate(data["images"]):
        cand = np.array([out[n, c, y, x].item() for c in (0, 5) for y, x in rec["pixels"]])
        cpp = np.array(rec["lattice_px_c0"] + rec["lattice_px_c5"])
        np.testing.assert_allclose(cand, cpp, rtol=1e-4, err_msg=rec["id"])
        weighted = float((probs[n].double() * out[n].double()).sum())
        assert weighted == pytest.approx(rec["lattice_sum"], rel=1e-3), rec["id"]
        # the filter's total per class: within 1.4e-3 on all 420 (measured), a looser extra check
        class_sums = out[n].double().sum((1, 2)).numpy()
        np.testing.assert_allclose(class_sums, rec["lattice_class_sums"], rtol=2e-3, err_msg=rec["id"])


def test_batch_equals_images_one_by_one(reference, filtered) -> None:
    images, probs, out = filtered
    p = reference[0]["params"]
    one = bilateral_filter(images[3:4], probs[3:4], p["sigma_rgb"], p["sigma_xy"])
    torch.testing.assert_close(one[0], out[3], rtol=1e-5, atol=1e-4)


def test_extension_call_writes_in_place(reference, filtered) -> None:
    images, probs, out = filtered
    p = reference[0]["params"]
    n, k, h, w = probs[:2].shape
    result = np.zeros(n * k * h * w, dtype=np.float32)
    bilateralfilter_batch(images[:2].numpy().ravel(), probs[:2].numpy().ravel(), result, n, k, h, w,
                          p["sigma_rgb"], p["sigma_xy"])
    np.testing.assert_allclose(result.reshape(n, k, h, w), out[:2].numpy(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="values: expected"):
        bilateralfilter_batch(images[:2].numpy().ravel(), probs[:2].numpy().ravel(), result, n, k + 1, h, w, 15, 50)
    single = np.zeros(k * h * w, dtype=np.float32)
    bilateralfilter(images[1].numpy().ravel(), probs[1].numpy().ravel(), single, h, w, p["sigma_rgb"], p["sigma_xy"])
    np.testing.assert_allclose(single.reshape(k, h, w), out[1].numpy(), rtol=1e-5, atol=1e-4)


def test_extension_calls_reject_what_the_swig_typemaps_reject() -> None:
    """The output is written in place, so it must be float32 and C-contiguous (numpy.i's INPLACE_ARRAY1);
    inputs of another real dtype are converted (IN_ARRAY1); each error names the argument."""
    img, val = np.zeros(3 * 16, np.float64), np.zeros(2 * 16, np.float64)
    with pytest.raises(TypeError, match="^out: expected a float32"):
        bilateralfilter_batch(img, val, np.zeros(32, np.float64), 1, 2, 4, 4, 15, 50)
    with pytest.raises(ValueError, match="^out: expected a C-contiguous"):
        bilateralfilter_batch(img, val, np.zeros(64, np.float32)[::2], 1, 2, 4, 4, 15, 50)
    with pytest.raises(ValueError, match="^images: expected 48 values"):
        bilateralfilter_batch(img[:-1], val, np.zeros(32, np.float32), 1, 2, 4, 4, 15, 50)
    with pytest.raises(TypeError, match="^values: expected a real-valued"):
        bilateralfilter_batch(img, val.astype(complex), np.zeros(32, np.float32), 1, 2, 4, 4, 15, 50)
    with pytest.raises(ValueError, match="^values: 31 values"):
        bilateralfilter(img, val[:-1], np.zeros(31, np.float32), 4, 4, 15, 50)
    out = np.zeros(32, np.float32)
    bilateralfilter_batch(img, val + 1.0, out, 1, 2, 4, 4, 15, 50)  # float64 inputs converted, like the typemap
    assert (out > 1.0).all()  # the self-term plus neighbours of a constant 1


def test_loss_equals_cpp_loss_code(reference, filtered) -> None:
    """Gate 1 (all labels 255, full ROI), scale 1, N = 1: the authors' loss_code stored with the values."""
    data = reference[0]
    images, probs, _ = filtered
    p = data["params"]
    loss = DenseEnergyLoss(p["weight"], p["sigma_rgb"], p["sigma_xy"], 1.0)
    for n in (0, 7, 19):
        rec = data["images"][n]
        h, w = probs.shape[2:]
        value = loss(images[n : n + 1], probs[n : n + 1], torch.ones(1, h, w), torch.full((1, 1, h, w), 255))
        assert value.shape == (1,)
        assert value.item() == pytest.approx(rec["loss_code"], rel=1e-3), rec["id"]


def test_bad_shapes_and_dtypes_raise_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="^images: expected shape"):
        bilateral_filter(torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 4, 4), 15, 50)
    with pytest.raises(ValueError, match="^values: expected"):
        bilateral_filter(torch.zeros(1, 3, 4, 4), torch.zeros(2, 4, 4), 15, 50)
    with pytest.raises(TypeError, match="^values: expected a float tensor, got torch.int64"):
        bilateral_filter(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4, dtype=torch.long), 15, 50)
    with pytest.raises(TypeError, match="^images: expected a float or uint8"):
        bilateral_filter(torch.zeros(1, 3, 4, 4, dtype=torch.int32), torch.zeros(1, 2, 4, 4), 15, 50)
    with pytest.raises(ValueError, match="^sigma_rgb and sigma_xy"):
        bilateral_filter(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4), 0, 50)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(reference, filtered) -> None:
    images, probs, out = filtered
    p = reference[0]["params"]
    gpu = bilateral_filter(images[:4].cuda(), probs[:4].cuda(), p["sigma_rgb"], p["sigma_xy"])
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), out[:4], rtol=1e-4, atol=1e-3)
