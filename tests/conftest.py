"""Shared fixtures: the real VOC sample, a tiny generated dataset, the MXNet ResNet-38 oracle, and the
whole pipeline reproduced once on a tiny configuration in a temporary git + DVC repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

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


# The pipeline on a tiny configuration: params.yaml merged with these (seconds per stage on one CPU core)
TINY = {
    "prepare_data": {"image_size": 48, "n_train": 10, "n_extra": 4, "n_val": 4, "n_test": 2},
    "model": {"width": 0.0625},
    "mining": {"cam_scales": [0.5, 1.0], "pool_processes": 0},
    "train_cls": {"steps": 3, "batch_size": 2, "crop_size": 48, "checkpoint_every": 2},
    "train_onestep": {"steps": 3, "batch_size": 2, "crop_size": 48, "checkpoint_every": 2},
    "train_full": {"steps": 2, "batch_size": 2, "crop_size": 48},
    "deeplab": {"width": 0.0625},
    "train_deeplab": {"steps": 2, "batch_size": 2, "crop_size": 48},
    "figures": {"examples": 2},
    "evaluate_deeplab": {"scales": [1.0], "flip": False},
}
TINY_EXPERIMENT = ("tiny-alpha-0.2", "alpha_ratio=0.2")


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return base


@dataclass(frozen=True)
class TinyPipeline:
    """A git + DVC repository holding the project's code and dvc.yaml with the TINY params, after
    `dvc repro`, committed ("baseline results"); its committed .dvc/config names `remote`, an empty local
    directory, as the default DVC remote. `experiment` finished with `dvc exp run --temp -S override`, so
    the workspace is still the baseline's (tiny_coco_pipeline has no experiment: both are ""). Shared by the
    session: use it read-only (clone it to change it)."""

    repo: Path
    remote: Path
    env: dict[str, str]
    experiment: str
    override: str

    def run(self, args: list[str], cwd: Path | None = None) -> str:
        """Run a command (in the repo by default) and return its stdout + stderr; fail the test on error."""
        done = subprocess.run(args, cwd=cwd or self.repo, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, (f"{' '.join(args)} failed in {cwd or self.repo}:\n"
                                      f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout + done.stderr


def _tiny_repo(root: Path, params: dict, experiment: tuple[str, str] = ("", "")) -> TinyPipeline:
    """A git + DVC repository at root/repo holding the project's code and dvc.yaml, with `params` as its
    params.yaml, its default DVC remote root/dvc-remote (empty); not yet committed."""
    repo, remote = root / "repo", root / "dvc-remote"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    keep = ("rrm/", "stages/", ".dvc/config", ".dvcignore", "dvc.yaml", "params.yaml", ".gitignore")
    for name in listed:
        if name.startswith(keep) and (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(root / ".site-cache"), "PYTHONPATH": str(repo),
           "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    pipeline = TinyPipeline(repo, remote, env, *experiment)
    for args in (["git", "init", "-q"], ["git", "config", "user.name", "ci"],
                 ["git", "config", "user.email", "ci@example.com"],
                 ["dvc", "remote", "add", "-d", "store", str(remote)]):
        pipeline.run(args)
    return pipeline


def _tiny_params(*overrides: dict) -> dict:
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    for override in overrides:
        params = _merge(params, override)
    return params


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> TinyPipeline:
    pipeline = _tiny_repo(tmp_path_factory.mktemp("tiny-pipeline"), _tiny_params(), TINY_EXPERIMENT)
    for args in (["git", "add", "-A"], ["git", "commit", "-qm", "tiny pipeline"], ["dvc", "repro"],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "baseline results"],
                 ["dvc", "exp", "run", "--temp", "-n", pipeline.experiment, "-S", pipeline.override]):
        pipeline.run(args)
    return pipeline


# The COCO configuration of tiny_coco_pipeline: COCO's layout and splits at data/coco
TINY_COCO = {
    "data": {"dataset": "coco", "root": "data/coco", "train_split": "train2014", "val_split": "val2014",
             "test_split": "val2014"},
    "prepare_data": {"generate": False},
    "evaluate_cam": {"split": "train2014"},
    "export_pseudo": {"split": "train2014"},
}


@pytest.fixture(scope="session")
def tiny_coco_pipeline(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> TinyPipeline:
    """tiny_pipeline's repository machinery with data.dataset coco: tiny_dataset's train and val images in
    COCO's layout and indices (81 classes) at data/coco, after the whole `dvc repro` (prepare_data
    has nothing to generate: it records the statistics of data/coco)."""
    from coco_layout import write_coco_layout

    pipeline = _tiny_repo(tmp_path_factory.mktemp("tiny-coco-pipeline"), _tiny_params(TINY_COCO))
    write_coco_layout(tiny_dataset, pipeline.repo / "data" / "coco", {"train": "train2014", "val": "val2014"})
    for args in (["git", "add", "-A"], ["git", "commit", "-qm", "tiny coco pipeline"],
                 ["dvc", "repro"]):
        pipeline.run(args)
    return pipeline
