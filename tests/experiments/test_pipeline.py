"""End to end: the real `dvc repro` on a tiny configuration in a temporary git repository (the session's
`tiny_pipeline`, tests/conftest.py).

Also checks that a second repro is a no-op and that the fixture's `dvc exp run -S alpha_ratio=0.2` shows
in `dvc metrics diff` against the baseline, nested metrics flattened (`per_class_iou.background`).
"""

from __future__ import annotations

import json

import pytest

from rrm.data.classes import CLASSES


@pytest.mark.slow
def test_dvc_repro_end_to_end(tiny_pipeline):
    repo = tiny_pipeline.repo
    for stage in ("cam", "onestep", "full", "pseudo", "twostep"):
        metrics = json.loads((repo / "reports" / stage / "metrics.json").read_text())
        assert 0.0 <= metrics["miou"] <= 1.0
        assert list(metrics["per_class_iou"]) == list(CLASSES)
        assert (repo / "reports" / stage / "per_class.csv").is_file()
    assert "miou_crf" in json.loads((repo / "reports/onestep/metrics.json").read_text())
    assert sorted((repo / "data/pseudo").glob("*.png"))
    assert not list((repo / "checkpoints").rglob("*.pt"))  # finished stages keep only their models

    assert "up to date" in tiny_pipeline.run(["dvc", "repro"])

    diff = json.loads(tiny_pipeline.run(["dvc", "metrics", "diff", "--json", "--all", "HEAD",
                                         tiny_pipeline.experiment]))
    assert "per_class_iou.background" in diff["reports/onestep/metrics.json"]  # nested metrics flattened
    mined = diff["reports/cam/metrics.json"]["reliable_fraction"]
    assert mined["new"] != mined["old"]  # the experiment's reliable regions follow its alpha_ratio
