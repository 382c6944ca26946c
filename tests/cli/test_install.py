"""A non-editable install (`pip install --no-deps .` into a target folder) finds its profiles and the
experiment table: `rrm profile list` and `rrm tables run --dry-run` work from a copy of the repository root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# The paper's tables as deduplicated experiments, in table order (Table 3's cells share Table 1's runs).
EXPERIMENTS = [f"t1-{loss}-r{r}" for loss in ("ce", "joint") for r in ("0.1", "0.2", "0.3", "0.4", "0.6", "0.8", "1.0")]
EXPERIMENTS += ["t2-cam-ce", "t2-cam-joint", "t4-onestep", "t5-resnet-val", "t5-resnet-test"]


def _tracked_copy(dest: Path) -> None:
    """The files git tracks (plus untracked, unignored ones), as a fresh clone would have them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def test_rrm_runs_from_a_non_editable_install(tmp_path):
    checkout, target = tmp_path / "checkout", tmp_path / "site"
    _tracked_copy(checkout)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), "."],
                   cwd=checkout, check=True, capture_output=True)
    shutil.rmtree(checkout / "rrm")  # only the installed copy can answer
    env = {**os.environ, "PYTHONPATH": str(target), "DVC_NO_ANALYTICS": "1"}

    def rrm(*args: str) -> str:
        done = subprocess.run([sys.executable, str(target / "bin" / "rrm"), *args], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run([sys.executable, "-c", "import rrm; print(rrm.__file__)"], cwd=checkout, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(target)
    assert rrm("profile", "list").split() == ["coco", "voc-code", "voc-code-imagenet", "voc-paper"]
    dry = rrm("tables", "run", "--dry-run").splitlines()
    seeds = yaml.safe_load((REPO / "rrm/experiments/configs/tables.yaml").read_text())["seeds"]
    assert [line.split(":")[0] for line in dry] == [f"{e}-s{i}" if i else e for e in EXPERIMENTS for i in range(seeds)]
    assert dry[0] == ("t1-ce-r0.1: -S alpha_ratio=0.1 -S data.val_split=val -S deeplab.arch=vgg16_largefov "
                      "-S seed=0 -S train_onestep.loss=ce -S train_onestep.pseudo=rrm  [evaluate_onestep]")
