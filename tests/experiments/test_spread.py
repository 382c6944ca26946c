"""The seed statistics against values computed by hand, and the grouping of DVC experiment records."""

from __future__ import annotations

import math

import pytest

from rrm.experiments import spread as sp


def test_spread_is_mean_sample_sd_min_max():
    s = sp.spread([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean, s.min, s.max) == (4, 2.5, 1.0, 4.0)
    assert s.sd == pytest.approx(math.sqrt(5.0 / 3.0), rel=1e-12)  # (2.25 + 0.25 + 0.25 + 2.25) / 3
    assert sp.spread([0.7]).sd == 0.0
    with pytest.raises(ValueError, match="no values"):
        sp.spread([])


def test_paired_difference_and_its_verdict():
    a = {0: 1.0, 1: 2.0, 2: 3.0, 9: 5.0}  # seed 9 has no partner: left out
    p = sp.paired(a, {0: 2.0, 1: 4.0, 2: 3.5})  # d = 1, 2, 0.5
    assert p.n == 3 and p.mean_delta == pytest.approx(7 / 6)
    assert p.se == pytest.approx(math.sqrt(7 / 12) / math.sqrt(3))  # sd(d)^2 = (1/36 + 25/36 + 16/36) / 2
    assert p.verdict == "B > A"  # 1.167 > 2 x 0.441
    assert sp.paired(a, {0: 0.0, 1: 1.0, 2: 2.5}).verdict == "B < A"  # d = -1, -1, -0.5
    assert sp.paired(a, {0: 2.0, 1: 1.0, 2: 3.5}).verdict == "within noise"  # d = 1, -1, 0.5
    assert sp.paired(a, {0: 3.0}).verdict == "within noise"  # one seed: no standard error
    with pytest.raises(ValueError, match="no common seeds"):
        sp.paired({0: 1.0}, {1: 1.0})


def test_prediction_interval_uses_student_t():
    s = sp.Spread(n=5, mean=0.6, sd=0.01, min=0.59, max=0.61)
    assert sp.prediction_halfwidth(s) == pytest.approx(2.776 * 0.01 * math.sqrt(1.2))
    assert sp.t975(40) == 1.96
    with pytest.raises(ValueError, match="at least 2 seeds"):
        sp.t975(0)


def _metrics(onestep_crf: float, cam: float = 0.5) -> dict:
    return {"reports/onestep/metrics.json": {"miou": onestep_crf - 0.07, "miou_crf": onestep_crf},
            "reports/cam/metrics.json": {"miou": cam}}


def test_spread_table_and_check_of_one_run():
    table = sp.spread_table({0: _metrics(0.63), 1: _metrics(0.65), 2: _metrics(0.64)})
    crf = table["one-step + CRF"]
    assert crf["n"] == 3 and crf["mean"] == pytest.approx(0.64) and crf["sd"] == pytest.approx(0.01)
    assert crf["seeds"] == {0: 0.63, 1: 0.65, 2: 0.64}
    assert table["CAM (train)"]["sd"] == 0.0 and "two-step" not in table
    half = 4.303 * 0.01 * math.sqrt(1 + 1 / 3)  # t(0.975, 2)
    inside = {r["label"]: r["within"] for r in sp.check_run(_metrics(0.64 + 0.99 * half), table)}
    assert inside["one-step + CRF"] and inside["one-step"]
    outside = {r["label"]: r["within"] for r in sp.check_run(_metrics(0.64 + 1.01 * half), table)}
    assert not outside["one-step + CRF"]
    missing = sp.check_run({}, table)
    assert not any(r["within"] for r in missing) and all(r["value"] is None for r in missing)


def _result(seed: int, alpha: float, crf: float, state: str = "success") -> dict:
    return {"state": state, "params": {"params.yaml": {"seed": seed, "alpha_ratio": alpha, "data": {"root": "d"}}},
            "metrics": _metrics(crf)}


def test_experiments_group_by_their_non_seed_params_and_compare_paired():
    results = [_result(0, 0.4, 0.63), _result(1, 0.4, 0.65), _result(2, 0.4, 0.64),
               _result(0, 0.2, 0.60), _result(1, 0.2, 0.61), _result(2, 0.2, 0.615),
               _result(3, 0.2, 0.9, state="failed")]
    groups = sp.group_by_setting(results)
    base = sp.without_seed(results[0]["params"])
    other = sp.without_seed(results[3]["params"])
    assert set(groups) == {base, other} and sorted(groups[other]) == [0, 1, 2]
    assert sp.setting_diff(other, base) == "alpha_ratio=0.2"
    text = sp.format_groups(groups, base, labels=["one-step + CRF"])
    assert "## alpha_ratio=0.2 (seeds [0, 1, 2])" in text
    # d = -3, -4, -2.5 points: mean -3.2, se 0.44: below baseline
    assert "| one-step + CRF | 60.8 ± 0.8 (3) | -3.2 ± 0.4 (3) | below baseline |" in text
    assert "| one-step + CRF | 64.0 ± 1.0 (3) | – | – |" in text
