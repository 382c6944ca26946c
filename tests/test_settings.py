from __future__ import annotations

import copy
import re
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml

from rrm.settings import (
    AMP,
    CRF_BACKENDS,
    DATASETS,
    DEEPLAB_ARCHS,
    DEVICES,
    LOSSES,
    MINING_RULES,
    OPTIMIZERS,
    PSEUDO_LABELS,
    RRM_ARCH,
    Params,
    Prediction,
    load_params,
    load_settings,
    parse,
    validate,
)

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _raw() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def _as_mapping(value: object) -> object:
    """A built settings object back as the plain YAML values it was made from."""
    if is_dataclass(value):
        return {f.name: _as_mapping(getattr(value, f.name)) for f in fields(value)}
    return list(value) if isinstance(value, tuple) else value


def test_committed_params_build_every_key_and_only_those():
    """Every params.yaml key lands in a field with its value, and every field comes from a key."""
    raw = _raw()
    arch = raw["deeplab"]["arch"]  # the keys held per architecture build into deeplab.arch's entry
    raw["deeplab"]["init"] = raw["deeplab"]["init"][arch]
    raw["evaluate_deeplab"]["crf"] = raw["evaluate_deeplab"]["crf"][arch]
    built = _as_mapping(load_settings(PARAMS))
    mining = built["mining"]
    mining.update(mining.pop("params"))  # MiningParams' fields are the mining section's keys ...
    assert mining.pop("alpha_ratio") == raw.pop("alpha_ratio")  # ... and the top-level alpha_ratio
    assert built == raw


def test_load_params_returns_the_validated_mapping():
    assert load_params(PARAMS) == _raw()


def test_every_problem_is_listed_at_once(tmp_path):
    bad = _raw()
    bad["nproc"] = 0
    bad["train_onestep"]["steps"] = "many"
    del bad["mining"]["rule"]
    bad["evaluate"]["crf"]["bi_sxy"] = "wide"
    del bad["deeplab"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError) as error:
        load_params(path)
    message = str(error.value)
    assert str(path) in message
    assert "  nproc: 0 is not an integer >= 1" in message
    assert "  train_onestep.steps: 'many' is not a positive integer" in message
    assert "  mining.rule: missing (expected a string)" in message
    assert "  evaluate.crf.bi_sxy: 'wide' is not a number" in message
    assert "  deeplab: missing (expected a section)" in message
    assert len(message.splitlines()) == 6


@pytest.mark.parametrize("value", [0, -0.1, 1.01, "0.4", True])
def test_alpha_ratio_outside_unit_interval_is_rejected(value):
    params = _raw()
    params["alpha_ratio"] = value
    with pytest.raises(ValueError, match=r"\n  alpha_ratio: "):
        validate(params)


def test_method_dataclass_checks_are_reported_under_their_params_key():
    params = _raw()
    params["mining"]["crf"]["bi_srgb"] = -1.0
    with pytest.raises(ValueError, match=r"\n  mining\.crf\.bi_srgb: -1\.0: CRFParams\.bi_srgb must be > 0"):
        validate(params)


@pytest.mark.parametrize(("key", "choices"), [
    ("device", DEVICES), ("amp", AMP), ("train_cls.optimizer", OPTIMIZERS), ("train_onestep.loss", LOSSES),
    ("train_onestep.pseudo", PSEUDO_LABELS), ("deeplab.arch", DEEPLAB_ARCHS), ("mining.rule", MINING_RULES),
    ("mining.crf_backend", CRF_BACKENDS), ("data.dataset", DATASETS)])
def test_choice_lists_are_the_codes_own(key, choices):
    """Each choice the code defines is accepted, anything else is rejected naming the key."""
    *sections, name = key.split(".")
    params = _raw()
    node = params
    for section in sections:
        node = node[section]
    for choice in choices:
        node[name] = choice
        validate(params)
    node[name] = "bogus"
    with pytest.raises(ValueError, match="\n  " + re.escape(key) + ": "):
        validate(params)


def test_batch_must_split_over_the_processes():
    params = _raw()
    params["nproc"] = 3
    with pytest.raises(ValueError) as error:
        validate(params)
    stages = [line.split(".")[0].strip() for line in str(error.value).splitlines()[1:]]
    assert stages == [s for s in ("train_cls", "train_onestep", "train_full", "train_deeplab")
                      if params[s]["batch_size"] % 3]


def test_train_cls_may_skip_training_but_others_may_not():
    params = copy.deepcopy(_raw())
    params["train_cls"]["steps"] = 0
    assert parse(params).train_cls.steps == 0
    params["train_full"]["steps"] = 0
    with pytest.raises(ValueError, match=r"train_full\.steps: 0 is not a positive integer"):
        validate(params)


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_exponent_floats_as_dvc_writes_them_load_as_numbers(tmp_path):
    text = PARAMS.read_text().replace("    weight: 1.25e-5", "    weight: 5e-08")
    assert "5e-08" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_settings(path).train_onestep.energy.weight == 5e-08


def test_per_architecture_keys_follow_deeplab_arch():
    raw = _raw()
    raw["deeplab"]["init"] = {"vgg16_largefov": "vgg.pth", "resnet101_v2": "resnet.pth"}
    raw["evaluate_deeplab"]["crf"]["resnet101_v2"]["bi_sxy"] = 67.0
    for arch, init, bi_sxy in (("vgg16_largefov", "vgg.pth", 121.0), ("resnet101_v2", "resnet.pth", 67.0)):
        raw["deeplab"]["arch"] = arch
        built = parse(raw)
        assert (built.deeplab.init, built.evaluate_deeplab.crf.bi_sxy) == (init, bi_sxy)
    raw["deeplab"]["init"] = "resnet.pth"  # one file for both networks: which one it fits is ambiguous
    del raw["evaluate_deeplab"]["crf"]["vgg16_largefov"]
    raw["evaluate_deeplab"]["crf"]["resnet101_v2"]["bi_srgb"] = "wide"
    with pytest.raises(ValueError) as error:
        parse(raw)
    message = str(error.value)
    assert "  deeplab.init: 'resnet.pth' is not one entry per architecture (vgg16_largefov, resnet101_v2)" in message
    assert "  evaluate_deeplab.crf: " in message and "is not one entry per architecture" in message
    raw["evaluate_deeplab"]["crf"]["vgg16_largefov"] = dict(raw["evaluate_deeplab"]["crf"]["resnet101_v2"])
    raw["deeplab"]["init"] = {"vgg16_largefov": None, "resnet101_v2": None}
    with pytest.raises(ValueError, match=r"evaluate_deeplab\.crf\.resnet101_v2\.bi_srgb: 'wide' is not a number"):
        parse(raw)
    raw["deeplab"]["arch"] = "vgg19"  # reported once, at deeplab.arch
    with pytest.raises(ValueError, match=r"deeplab\.arch: 'vgg19' is not one of") as error:
        parse(raw)
    assert "entry per architecture" not in str(error.value)


def test_settings_import_neither_torch_nor_the_method():
    """The bottom layer: a stage, a tool or a CRF worker reads params.yaml without torch or pydensecrf (its one
    rrm import is CRFParams' stdlib-only module, which rrm.ops shares without yaml)."""
    code = ("import sys, rrm.settings as s; s.load_settings(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m in ('torch', 'pydensecrf') or m.startswith('rrm.') "
            "and m not in ('rrm.settings', 'rrm.method', 'rrm.method.crf_params')))")
    out = subprocess.run([sys.executable, "-c", code, str(PARAMS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_architecture_choices_are_the_registries_names():
    from rrm.models import deeplab, rrm_net

    assert tuple(deeplab.ARCHS) == DEEPLAB_ARCHS and set(deeplab.BUILDERS) == set(DEEPLAB_ARCHS)
    assert tuple(rrm_net.ARCHS) == (RRM_ARCH,)
    assert {arch.inference for arch in [*deeplab.ARCHS.values(), *rrm_net.ARCHS.values()]} <= {
        f.name for f in fields(Params) if f.type in ("Prediction", Prediction)}


def test_alpha_ratio_is_read_from_the_top_level_key_only():
    params = _raw()
    params["mining"]["alpha_ratio"] = 0.9  # not a mining key: ignored
    params["alpha_ratio"] = 0.2
    assert parse(params).mining.params.alpha_ratio == 0.2
    del params["alpha_ratio"]
    with pytest.raises(ValueError, match=r"\n  alpha_ratio: missing"):
        parse(params)
