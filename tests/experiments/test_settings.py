from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rrm.experiments.settings import load_params, validate

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_committed_params_are_valid():
    params = load_params(PARAMS)
    assert 0 < params["alpha_ratio"] <= 1


def test_every_problem_is_listed_at_once(tmp_path):
    params = yaml.safe_load(PARAMS.read_text())
    bad = copy.deepcopy(params)
    bad["alpha_ratio"] = 1.5
    bad["train_onestep"]["steps"] = "many"
    del bad["mining"]["rule"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError) as error:
        load_params(path)
    message = str(error.value)
    assert str(path) in message
    assert "alpha_ratio: 1.5 is not a number in (0, 1]" in message
    assert "train_onestep.steps: 'many'" in message
    assert "mining.rule: missing" in message


@pytest.mark.parametrize("value", [0, -0.1, 1.01, "0.4", True])
def test_alpha_ratio_outside_unit_interval_is_rejected(value):
    params = yaml.safe_load(PARAMS.read_text())
    params["alpha_ratio"] = value
    with pytest.raises(ValueError, match="alpha_ratio"):
        validate(params)


@pytest.mark.parametrize(("key", "good", "bad"), [("amp", "bf16", "fp16"),
                                                 ("mining.crf_backend", "torch", "cuda")])
def test_gpu_path_switches_are_validated(key, good, bad):
    params = yaml.safe_load(PARAMS.read_text())
    section, name = (params, key) if "." not in key else (params["mining"], key.split(".")[1])
    section[name] = good
    validate(params)
    section[name] = bad
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate(params)


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_exponent_floats_as_dvc_writes_them_load_as_numbers(tmp_path):
    text = PARAMS.read_text().replace("    weight: 1.25e-5", "    weight: 5e-08")
    assert "5e-08" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path)["train_onestep"]["energy"]["weight"] == 5e-08
