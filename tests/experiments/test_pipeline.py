"""End to end: the real `dvc repro` on a tiny configuration in a temporary git repository.

Also checks that a second repro is a no-op and that `dvc exp run -S alpha_ratio=...` works and shows
per-class IoU changes in `dvc metrics diff`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rrm.data.classes import CLASSES

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

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


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return base


def _run(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.mark.slow
def test_dvc_repro_end_to_end(tmp_path):
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    keep = ("rrm/", "stages/", ".dvc/config", ".dvcignore", "dvc.yaml", "params.yaml", ".gitignore")
    for name in listed:
        if name.startswith(keep) and (REPO / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tmp_path / name)
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(tmp_path / ".site-cache"), "PYTHONPATH": str(tmp_path),
           "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    for args in (["git", "init", "-q"], ["git", "config", "user.name", "ci"],
                 ["git", "config", "user.email", "ci@example.com"], ["git", "add", "-A"],
                 ["git", "commit", "-qm", "tiny pipeline"]):
        _run(args, tmp_path, env)

    _run(["dvc", "repro"], tmp_path, env)
    for stage in ("cam", "onestep", "full", "pseudo", "twostep"):
        metrics = json.loads((tmp_path / "reports" / stage / "metrics.json").read_text())
        assert 0.0 <= metrics["miou"] <= 1.0
        assert list(metrics["per_class_iou"]) == list(CLASSES)
        assert (tmp_path / "reports" / stage / "per_class.csv").is_file()
    assert "miou_crf" in json.loads((tmp_path / "reports/onestep/metrics.json").read_text())
    assert sorted((tmp_path / "data/pseudo").glob("*.png"))
    assert not list((tmp_path / "checkpoints").rglob("*.pt"))  # finished stages keep only their models

    assert "up to date" in _run(["dvc", "repro"], tmp_path, env)

    _run(["git", "add", "-A"], tmp_path, env)
    _run(["git", "commit", "-qm", "baseline results"], tmp_path, env)
    _run(["dvc", "exp", "run", "-S", "alpha_ratio=0.2"], tmp_path, env)
    diff = _run(["dvc", "metrics", "diff", "--all"], tmp_path, env)
    assert "per_class_iou.background" in diff
