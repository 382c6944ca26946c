"""Shared fixtures: the real VOC sample, a tiny generated dataset, a tiny trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# RRM_VOC_SAMPLE: where ../shared does not travel (the lent GPU machine gets a copy inside the repo)
VOC_SAMPLE = Path(os.environ.get("RRM_VOC_SAMPLE", REPO.parent / "shared" / "data" / "voc2012-sample"))


@pytest.fixture(scope="session")
def voc_sample() -> Path:
    if not VOC_SAMPLE.is_dir():
        pytest.skip(f"{VOC_SAMPLE}: real VOC sample not present")
    return VOC_SAMPLE


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A handful of generated 48-px images in VOC layout (shared by the training and pipeline tests)."""
    from rrm.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("embedded")
    generate_dataset(root, seed=3, image_size=48, n_train=12, n_extra=4, n_val=4, n_test=2)
    return root


# RRM_REFERENCE: where ../shared does not travel, as RRM_VOC_SAMPLE for the photos
MXNET_ORACLE = Path(os.environ.get("RRM_REFERENCE", REPO.parent / "shared" / "reference")) / "mxnet-resnet38"


@pytest.fixture(scope="session")
def mxnet_resnet38() -> tuple[Path, dict]:
    """The ResNet-38 `.params` file real MXNet 1.9.1 wrote (1/16 width, PSA's key names) and the arrays a
    correct reader returns, under our ResNet-38 names (README in that folder)."""
    import numpy as np

    params, expected = MXNET_ORACLE / "resnet38_w1-16.params", MXNET_ORACLE / "resnet38_w1-16_expected.npz"
    if not (params.is_file() and expected.is_file()):
        pytest.skip(f"{MXNET_ORACLE}: MXNet ResNet-38 oracle not present")
    with np.load(expected) as arrays:
        return params, {name: arrays[name] for name in arrays.files}
