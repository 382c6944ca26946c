"""Real-VOC profiles: named sets of params.yaml overrides (profiles/<name>.yaml); VOC + SBD split preparation.

params.yaml stays the embedded default. `rrm profile apply voc-code` merges a profile into it: every key
must already exist there with a value of the same kind, the merged file must pass `rrm.experiments.settings.validate`,
the dataset root and weight files must exist, and only then is params.yaml rewritten (atomically, its
comments kept, so `dvc exp run -S alpha_ratio=0.2` and the other ablations run on top of it unchanged).
`git checkout params.yaml` returns to the embedded default.

`prepare_voc` writes ImageSets/Segmentation/train_aug.txt (VOC train ∪ SBD train+val − VOC val) when it is
missing and checks the lists against VOC 2012's sizes (10,582 / 1,449 / 1,456), warning on any difference.
"""

from __future__ import annotations

import copy
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

# rrm.experiments.settings, rrm.data.voc and rrm.io import torch: they are imported where used, so that mounting this app
# on the `rrm` command line keeps `rrm --help` instant (as rrm/cli.py does).

PROFILE_DIR = Path(__file__).resolve().parents[2] / "profiles"
HEADER = "# rrm profile"  # first words of the lines `apply` puts on top of params.yaml (replaced on re-apply)
MASK_SUFFIX = ".png"
FLOAT_TAG, NULL_TAG = "tag:yaml.org,2002:float", "tag:yaml.org,2002:null"
_WHY = {
    "train_aug": "VOC train ∪ SBD train+val − VOC val",
    "val": "the segmentation val list of VOC 2012",
    "test": "the segmentation test list of VOC 2012",
}
_SHOWN = 5  # ids quoted per problem in error messages
_MISSING = object()


class SplitCountWarning(UserWarning):
    """A split list whose size differs from PASCAL VOC 2012's: scores are not comparable with the paper's."""


# ---------------------------------------------------------------------------------------------- profiles


def profile_path(name: str | Path) -> Path:
    """A profile by name (profiles/<name>.yaml beside the package, or under the working directory) or path."""
    given = Path(name)
    if given.suffix in (".yaml", ".yml"):
        if not given.is_file():
            raise FileNotFoundError(f"{given}: profile file not found")
        return given
    for base in (Path("profiles"), PROFILE_DIR):
        if (base / f"{name}.yaml").is_file():
            return base / f"{name}.yaml"
    found = ", ".join(available_profiles()) or "none"
    raise FileNotFoundError(f"profile {name!r} not found; available: {found}")


def available_profiles() -> list[str]:
    bases = [base for base in (Path("profiles"), PROFILE_DIR) if base.is_dir()]
    return sorted({p.stem for base in bases for p in base.glob("*.yaml")})


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
    """A profile's overrides as {dotted key: value}."""
    path = profile_path(name)
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(tree, dict) or not tree:
        raise ValueError(f"{path}: expected a mapping of params.yaml keys to values")
    return flatten(tree, source=str(path))


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
    paths default to null). Ranges and choices are `rrm.experiments.settings.validate`'s job."""
    from rrm.experiments.settings import lookup

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
    from rrm.experiments.settings import validate

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


# ----------------------------------------------------------------------------------------------- VOC + SBD


@dataclass(frozen=True)
class PreparedVOC:
    """What `prepare_voc` found: list sizes, whether it wrote train_aug.txt, and the mask folder to use
    (None: SegmentationClassAug, else SegmentationClass, under the root; a path: SBD's PNGs elsewhere)."""

    root: Path
    counts: dict[str, int]
    created_train_aug: bool
    mask_dir: Path | None


def check_split_counts(voc_root: str | Path) -> dict[str, int]:
    """Ids per list (train_aug, val, and test when present); a SplitCountWarning for each size that differs
    from VOC 2012's (10,582 / 1,449 / 1,456). The test list ships with the separate test download."""
    from rrm.data.voc import LIST_DIR, VOC_COUNTS, read_split

    voc_root = Path(voc_root)
    counts = {}
    for split, expected in VOC_COUNTS.items():
        path = voc_root / LIST_DIR / f"{split}.txt"
        if split == "test" and not path.is_file():
            continue
        counts[split] = n = len(read_split(voc_root, split))
        if n != expected:
            warnings.warn(SplitCountWarning(
                f"{path}: {n:,} ids, but PASCAL VOC 2012's {split} has {expected:,} ({_WHY[split]}); "
                "scores on these lists are not comparable with the paper's"), stacklevel=2)
    return counts


def _sbd_mask_dir(voc_root: Path, sbd_root: Path | None) -> Path | None:
    """SBD's SegmentationClassAug PNGs: under the VOC root (None: the data layer finds them), else under or at
    `sbd_root`; None also when there are none (SegmentationClass then has to cover train_aug)."""
    if (voc_root / "SegmentationClassAug").is_dir() or sbd_root is None:
        return None
    for folder in (sbd_root / "SegmentationClassAug", sbd_root):
        if folder.is_dir() and any(folder.glob(f"*{MASK_SUFFIX}")):
            return folder.absolute()
    return None


def _missing_files(voc_root: Path, mask_dir: Path, splits: tuple[str, ...]) -> list[str]:
    from rrm.data.voc import image_path, read_split

    problems = []
    for split in splits:
        ids = read_split(voc_root, split)
        no_image = [i for i in ids if not image_path(voc_root, i).is_file()]
        no_mask = [i for i in ids if not (mask_dir / f"{i}{MASK_SUFFIX}").is_file()]
        for what, where, names in (("images", voc_root / "JPEGImages", no_image),
                                   ("masks", mask_dir, no_mask)):
            if names:
                problems.append(f"  {split}: {len(names):,} of {len(ids):,} ids have no {what} in {where} "
                                f"(first: {', '.join(names[:_SHOWN])})")
    return problems


def prepare_voc(voc_root: str | Path, sbd_root: str | Path | None = None) -> PreparedVOC:
    """Make a VOCdevkit/VOC2012 root ready for the real-VOC profiles.

    Writes ROOT/ImageSets/Segmentation/train_aug.txt atomically when absent (`build_train_aug`: VOC train
    ∪ SBD train+val − VOC val; SBD's ids from `sbd_root` or ROOT/SegmentationClassAug), checks the list
    sizes (`check_split_counts`, warnings), picks SBD's SegmentationClassAug PNGs as masks wherever they
    are, and raises FileNotFoundError listing train_aug / val ids without an image or a mask (image-level
    labels are read from the masks, so every training id needs one).
    """
    from rrm.data.voc import LIST_DIR, build_train_aug
    from rrm.io import write_text

    voc_root = Path(voc_root)
    sbd = Path(sbd_root) if sbd_root is not None else None
    if not voc_root.is_dir():
        raise FileNotFoundError(f"{voc_root}: VOC root not found (expected VOCdevkit/VOC2012 with "
                                "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/)")
    list_path = voc_root / LIST_DIR / "train_aug.txt"
    created = not list_path.is_file()
    if created:
        ids = build_train_aug(voc_root, sbd, expect_voc_counts=False)
        write_text(list_path, "".join(f"{i}\n" for i in ids))
    mask_dir = _sbd_mask_dir(voc_root, sbd)
    counts = check_split_counts(voc_root)
    effective = mask_dir or (voc_root / "SegmentationClassAug" if (voc_root / "SegmentationClassAug").is_dir()
                             else voc_root / "SegmentationClass")
    problems = _missing_files(voc_root, effective, ("train_aug", "val"))
    if problems:
        raise FileNotFoundError(
            f"{voc_root}: files missing for the real-VOC profile:\n" + "\n".join(problems)
            + "\n  SBD's masks: put SegmentationClassAug/ (the 12,031 PNGs of VOC train+val and SBD) under "
            "the VOC root, or pass its folder as sbd_root / --sbd-root; SBD's .mat files are not read")
    return PreparedVOC(root=voc_root, counts=counts, created_train_aug=created, mask_dir=mask_dir)


# ------------------------------------------------------------------------------------------------- apply


def apply_profile(name: str | Path, params_path: str | Path = "params.yaml", *,
                  voc_root: str | Path | None = None, sbd_root: str | Path | None = None,
                  weights: str | Path | None = None, deeplab_weights: str | Path | None = None) -> dict:
    """Merge profile `name` into params.yaml and return the merged params.

    Path options override the profile's data.root, model.init and deeplab.init. Absolute ones are kept;
    relative ones are taken from the working directory and stored relative to params.yaml's folder when
    inside it (`dvc exp run --queue` runs in a temporary copy of the repository: give data and weights
    that git does not track as absolute paths). Nothing is written unless the merged params validate, the
    VOC root passes `prepare_voc` and model.init exists; a missing deeplab.init only warns (two-step only).
    Raises ValueError / FileNotFoundError listing the problems.
    """
    from rrm.experiments.settings import lookup
    from rrm.io import write_text

    params_path = Path(params_path)
    base = params_path.parent
    source = str(profile_path(name))
    overrides = load_profile(name)
    for key, option in (("data.root", voc_root), ("model.init", weights), ("deeplab.init", deeplab_weights)):
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
    if lookup(merged, "deeplab.init") is not None and not at_base("deeplab.init").is_file():
        warnings.warn(f"{at_base('deeplab.init')}: deeplab.init not found; train_deeplab needs it "
                      "(--deeplab-weights)", stacklevel=2)
    prepared = prepare_voc(at_base("data.root"), sbd_root)
    if prepared.mask_dir is not None:  # the data layer reads data.mask_dir relative to data.root
        overrides["data.mask_dir"] = Path(os.path.relpath(prepared.mask_dir, at_base("data.root").absolute())
                                          ).as_posix()
        merged = merge(params, overrides)

    header = [f"{HEADER} {Path(source).stem} applied from {_relative(Path(source), base)}: "
              f"{len(overrides)} settings set over the embedded default;",
              f"{HEADER} `git checkout params.yaml` restores the default."]
    new_text = _render(text, overrides, header)
    if yaml.safe_load(new_text) != merged:  # what the stages will read must be exactly what was validated
        raise RuntimeError(f"{params_path}: rendered parameters differ from the validated ones; not written")
    write_text(params_path, new_text)
    return merged


# --------------------------------------------------------------------------------------------------- CLI

app = typer.Typer(help="Real-VOC profiles: `show` a profile's values, `apply` it to params.yaml.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to compare with / write")]
NameArgument = Annotated[str, typer.Argument(help="profile name (profiles/<name>.yaml) or a .yaml path")]


def _text(value: Any) -> str:
    if isinstance(value, float):
        return yaml_float(value)
    return yaml.safe_dump(value, default_flow_style=True, width=4096).strip().removesuffix("...").strip()


def _run(action, *args, **kwargs) -> Any:
    """Call `action`, echoing warnings and turning expected errors into a message and exit code 1."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = action(*args, **kwargs)
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=1) from error
        finally:
            for warning in caught:
                typer.echo(f"warning: {warning.message}", err=True)
    return result


@app.command("list")
def list_profiles() -> None:
    """Names of the available profiles."""
    for name in available_profiles():
        typer.echo(name)


@app.command()
def show(name: NameArgument, params: ParamsOption = Path("params.yaml")) -> None:
    """Print every setting of profile NAME, validated against PARAMS, beside PARAMS' current value."""
    from rrm.experiments.settings import lookup

    overrides = _run(load_profile, name)
    current = yaml.safe_load(params.read_text()) if params.is_file() else {}
    if current:
        _run(expand, current, overrides, source=f"{profile_path(name)} applied to {params}")
    width = max(map(len, overrides))
    for key, value in overrides.items():
        now = lookup(current, key, _MISSING)
        note = "" if now is _MISSING else "  (same)" if now == value else f"  (now {_text(now)})"
        typer.echo(f"{key:<{width}}  {_text(value)}{note}")


@app.command()
def apply(name: NameArgument,
          voc_root: Annotated[Path | None, typer.Option(help="VOCdevkit/VOC2012 (data.root)")] = None,
          sbd_root: Annotated[Path | None, typer.Option(
              help="SBD: benchmark_RELEASE/ (train.txt, val.txt) or a SegmentationClassAug/ folder")] = None,
          weights: Annotated[Path | None, typer.Option(help="ResNet-38 state dict for model.init")] = None,
          deeplab_weights: Annotated[Path | None, typer.Option(
              help="torchvision ImageNet file for deeplab.init")] = None,
          params: ParamsOption = Path("params.yaml")) -> None:
    """Merge profile NAME into PARAMS (validated first, comments kept; builds train_aug.txt when missing)."""
    merged = _run(apply_profile, name, params, voc_root=voc_root, sbd_root=sbd_root, weights=weights,
                  deeplab_weights=deeplab_weights)
    typer.echo(f"{params}: profile {Path(str(name)).stem} applied; data.root {merged['data']['root']}, "
               f"model.init {merged['model']['init']}, deeplab.init {merged['deeplab']['init']}")


@app.command("prepare-voc")
def prepare_voc_command(
        voc_root: Annotated[Path, typer.Argument(help="VOCdevkit/VOC2012")],
        sbd_root: Annotated[Path | None, typer.Option(help="SBD root or a SegmentationClassAug/ folder")
                            ] = None,
) -> None:
    """Write train_aug.txt if missing, check the lists' sizes and that every id has an image and a mask."""
    prepared = _run(prepare_voc, voc_root, sbd_root)
    sizes = ", ".join(f"{split} {n:,}" for split, n in prepared.counts.items())
    typer.echo(f"{voc_root}: {sizes}" + (" (train_aug.txt written)" if prepared.created_train_aug else ""))
