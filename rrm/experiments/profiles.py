"""Real-VOC profiles: named sets of params.yaml overrides, shipped as rrm/experiments/configs/profiles/<name>.yaml.

params.yaml stays the embedded default. `rrm profile apply voc-code` merges a profile into it: every key
must already exist there with a value of the same kind, the merged file must pass
`rrm.settings.validate`, the dataset root (`rrm.data.voc_prepare.prepare_voc`) and weight files
must exist, and only then is params.yaml rewritten (atomically, its comments kept, so `dvc exp run -S
alpha_ratio=0.2` and the other ablations run on top of it unchanged). `git checkout params.yaml` returns to
the embedded default.

A profile may start with `extends: <profile>`: it then holds only the keys that differ from that profile,
and loading merges it onto its base (voc-paper extends voc-code).
"""

from __future__ import annotations

import copy
import io
import math
import os
import warnings
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from rrm.experiments.configs import config_file

# rrm.data and rrm.io import torch: they are imported where used, so that the
# `rrm profile` commands start instantly.

PACKAGED = ("profiles",)  # folder of the shipped profiles inside rrm/experiments/configs
HEADER = "# rrm profile"  # first words of the lines `apply` puts on top of params.yaml (replaced on re-apply)
EXTENDS = "extends"  # a profile's key naming the profile it overlays
FLOAT_TAG, NULL_TAG = "tag:yaml.org,2002:float", "tag:yaml.org,2002:null"
_MISSING = object()


def _is_file(name: str | Path) -> bool:
    """Whether `name` refers to a profile by its file path rather than a shipped profile by name."""
    return Path(name).suffix in (".yaml", ".yml")


def profile_path(name: str | Path) -> Path | Traversable:
    """A shipped profile by name (voc-code), or any profile file by its .yaml path."""
    if _is_file(name):
        if not Path(name).is_file():
            raise FileNotFoundError(f"{name}: profile file not found")
        return Path(name)
    packaged = config_file(*PACKAGED, f"{name}.yaml")
    if "/" not in str(name) and packaged.is_file():
        return packaged
    found = ", ".join(available_profiles()) or "none"
    raise FileNotFoundError(f"profile {name!r} not found; available: {found}")


def profile_label(name: str | Path) -> str:
    """How messages and params.yaml's header name a profile: its path, or its place in the package."""
    path = profile_path(name)
    return str(path) if _is_file(name) else "/".join(("rrm/experiments/configs", *PACKAGED, path.name))


def available_profiles() -> list[str]:
    """Names of the shipped profiles."""
    folder = config_file(*PACKAGED)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def flatten(tree: dict, *, source: str, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c.d": 2} -> {"a.b": 1, "c.d": 2}; a key set twice (nested and dotted) is an error."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{source}: key {key!r} is not a parameter name")
        dotted = prefix + key
        nested = isinstance(value, dict) and value
        leaves = flatten(value, source=source, prefix=dotted + ".") if nested else {dotted: value}
        for leaf, leaf_value in leaves.items():
            if leaf in flat:
                raise ValueError(f"{source}: {leaf} is set twice")
            flat[leaf] = leaf_value
    return flat


def load_profile(name: str | Path) -> dict[str, Any]:
    """A profile's overrides as {dotted key: value}, merged onto the profile it `extends` (keys in the base's
    order, the overlay's values winning; keys only the overlay sets follow)."""
    return _load(name, ())


def _load(name: str | Path, chain: tuple[str, ...]) -> dict[str, Any]:
    path, label = profile_path(name), profile_label(name)
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{label}: not valid YAML ({error})") from error
    if not isinstance(tree, dict) or not tree:
        raise ValueError(f"{label}: expected a mapping of params.yaml keys to values")
    base = tree.pop(EXTENDS, None)
    overrides = flatten(tree, source=label)
    if base is None:
        return overrides
    if not isinstance(base, str) or not base:
        raise ValueError(f"{label}: {EXTENDS}: expected a profile name or .yaml path, got {base!r}")
    if _is_file(name) and _is_file(base) and not Path(base).is_absolute():
        base = str(Path(name).parent / base)  # a base file beside the overlay
    if label in chain:
        raise ValueError(f"{label}: {EXTENDS} forms a cycle: {' -> '.join((*chain, label))}")
    merged = _load(base, (*chain, label))
    merged.update(overrides)
    return merged


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "section"}.get(type(value), type(value).__name__)


def override_problems(params: dict, overrides: dict[str, Any]) -> list[str]:
    """One line per override that names no existing setting or changes its kind (null stands for any kind:
    paths default to null). Ranges and choices are `rrm.settings.validate`'s job."""
    from rrm.settings import lookup

    problems = []
    for key, value in overrides.items():
        base = lookup(params, key, _MISSING)
        if base is _MISSING:
            problems.append(f"  {key}: not a params.yaml setting (misspelt, or a section without it)")
        elif isinstance(base, dict):
            problems.append(f"  {key}: is a section of params.yaml; set the keys inside it")
        elif None not in (base, value) and _kind(base) != _kind(value):
            problems.append(
                f"  {key}: {value!r} is a {_kind(value)}; params.yaml holds a {_kind(base)} ({base!r})")
    return problems


def merge(params: dict, overrides: dict[str, Any]) -> dict:
    """A deep copy of `params` with each existing dotted key set to its override."""
    merged = copy.deepcopy(params)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = merged
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and not isinstance(node[leaf], dict):
            node[leaf] = copy.deepcopy(value)
    return merged


def expand(params: dict, overrides: dict[str, Any], *, source: str) -> dict:
    """params.yaml with a profile's overrides, checked: one ValueError lists every bad key at once."""
    from rrm.settings import validate

    problems = override_problems(params, overrides)
    merged = merge(params, overrides)
    try:
        validate(merged, source)
    except ValueError as error:  # its lines read "  key: problem"; keys already reported above are skipped
        seen = {line.split(":")[0].strip() for line in problems}
        problems += [line for line in str(error).splitlines()[1:] if line.split(":")[0].strip() not in seen]
    if problems:
        raise ValueError(f"{source}: invalid profile:\n" + "\n".join(problems))
    return merged


# --------------------------------------------------------------------------------------- params.yaml I/O


def yaml_float(value: float) -> str:
    """A float as text that PyYAML (YAML 1.1: '1.0e-07', never '1e-07') and YAML 1.2 readers parse back."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
    return text


def _relative(path: Path, base: Path) -> str:
    """A path as params.yaml should hold it: absolute as given; relative ones (from the working directory)
    made relative to params.yaml's folder, where DVC runs the stages, or absolute when outside it."""
    if path.is_absolute():
        return str(path)
    resolved = path.absolute()
    try:
        return resolved.relative_to(base.absolute()).as_posix()
    except ValueError:
        return str(resolved)


def _render(text: str, overrides: dict[str, Any], header: list[str]) -> str:
    """params.yaml text with `overrides` set in place (comments, order and flow lists kept) under `header`."""
    from ruamel.yaml import YAML  # DVC's own YAML library: round-trips comments, as `dvc exp run -S` does
    from ruamel.yaml.representer import RoundTripRepresenter

    class Representer(RoundTripRepresenter):  # a subclass: ruamel's add_representer mutates the class
        pass

    Representer.add_representer(float, lambda r, v: r.represent_scalar(FLOAT_TAG, yaml_float(v)))
    Representer.add_representer(type(None), lambda r, v: r.represent_scalar(NULL_TAG, "null"))
    rt = YAML()
    rt.Representer = Representer
    rt.width = 4096  # never re-wrap long lines
    tree = rt.load(text)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        if _kind(node[leaf]) == _kind(value) and node[leaf] == value:
            continue  # unchanged: keep the original text
        if isinstance(node[leaf], list) and isinstance(value, list):
            node[leaf][:] = value  # in place: keeps the list's flow style and trailing comment
        else:
            node[leaf] = value
    out = io.StringIO()
    rt.dump(tree, out)
    lines = out.getvalue().splitlines()
    while lines and lines[0].startswith(HEADER):
        lines.pop(0)
    return "\n".join(header + lines) + "\n"


# ------------------------------------------------------------------------------------------------- apply


def apply_profile(name: str | Path, params_path: str | Path = "params.yaml", *,
                  voc_root: str | Path | None = None, sbd_root: str | Path | None = None,
                  weights: str | Path | None = None, deeplab_weights: str | Path | None = None,
                  vgg_weights: str | Path | None = None, coco_root: str | Path | None = None) -> dict:
    """Merge profile `name` into params.yaml and return the merged params.

    Path options override the profile's data.root (`voc_root`, or `coco_root` for a data.dataset coco
    profile), model.init and deeplab.init.resnet101_v2 / deeplab.init.vgg16_largefov (`deeplab_weights` /
    `vgg_weights`). Absolute ones are kept;
    relative ones are taken from the working directory and stored relative to params.yaml's folder when
    inside it (`dvc exp run --queue` runs in a temporary copy of the repository: give data and weights
    that git does not track as absolute paths). Nothing is written unless the merged params validate, the
    VOC root passes `prepare_voc` (a COCO root: has its splits' lists, labels and folders) and model.init
    exists; a missing deeplab.init file only warns (two-step only).
    Raises ValueError / FileNotFoundError listing the problems.
    """
    from rrm.data.datasets import get_dataset
    from rrm.data.voc_prepare import prepare_voc
    from rrm.io import write_text
    from rrm.settings import lookup

    params_path = Path(params_path)
    base = params_path.parent
    source = profile_label(name)
    overrides = load_profile(name)
    if voc_root is not None and coco_root is not None:
        raise ValueError("give one of --voc-root and --coco-root: both set data.root")
    for key, option in (("data.root", voc_root if coco_root is None else coco_root), ("model.init", weights),
                        ("deeplab.init.resnet101_v2", deeplab_weights), ("deeplab.init.vgg16_largefov", vgg_weights)):
        if option is not None:
            overrides[key] = _relative(Path(option), base)
    if not params_path.is_file():
        raise FileNotFoundError(f"{params_path}: parameter file not found")
    text = params_path.read_text()
    params = yaml.safe_load(text)
    if not isinstance(params, dict):
        raise ValueError(f"{params_path}: expected a mapping of parameters")
    merged = expand(params, overrides, source=f"{source} applied to {params_path}")

    def at_base(key: str) -> Path:
        path = Path(lookup(merged, key))
        return path if path.is_absolute() else base / path

    if lookup(merged, "model.init") is not None and not at_base("model.init").is_file():
        raise FileNotFoundError(f"{at_base('model.init')}: model.init weight file not found (--weights)")
    for arch, option in (("resnet101_v2", "--deeplab-weights"), ("vgg16_largefov", "--vgg-weights")):
        key = f"deeplab.init.{arch}"
        if lookup(merged, key, None) is not None and not at_base(key).is_file():
            warnings.warn(f"{at_base(key)}: {key} not found; train_deeplab needs it for {arch} ({option})",
                          stacklevel=2)
    dataset = get_dataset(lookup(merged, "data.dataset"))
    if dataset.name != "voc":
        missing = dataset.missing_files(at_base("data.root"), [lookup(merged, f"data.{key}_split")
                                                               for key in ("train", "val", "test")])
        if missing:
            raise FileNotFoundError(f"{at_base('data.root')}: not a {dataset.name} root (`rrm prepare-coco` "
                                    f"writes one); missing: {', '.join(map(str, missing))}")
    elif (prepared := prepare_voc(at_base("data.root"), sbd_root)).mask_dir is not None:  # the data layer reads data.mask_dir relative to data.root
        overrides["data.mask_dir"] = Path(os.path.relpath(prepared.mask_dir, at_base("data.root").absolute())
                                          ).as_posix()
        merged = merge(params, overrides)

    shown = _relative(Path(source), base) if _is_file(name) else source
    header = [f"{HEADER} {Path(source).stem} applied from {shown}: "
              f"{len(overrides)} settings set over the embedded default;",
              f"{HEADER} `git checkout params.yaml` restores the default."]
    new_text = _render(text, overrides, header)
    if yaml.safe_load(new_text) != merged:  # what the stages will read must be exactly what was validated
        raise RuntimeError(f"{params_path}: rendered parameters differ from the validated ones; not written")
    write_text(params_path, new_text)
    return merged
