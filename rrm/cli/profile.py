"""`rrm profile`: list the real-data profiles (VOC, COCO), show one beside params.yaml, apply it, prepare a VOC root."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from rrm.experiments.profiles import (
    apply_profile,
    available_profiles,
    expand,
    load_profile,
    profile_label,
    yaml_float,
)

app = typer.Typer(help="Real-data profiles (VOC, COCO): `show` a profile's values, `apply` it to params.yaml.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to compare with / write")]
NameArgument = Annotated[str, typer.Argument(help="profile name (rrm profile list) or a .yaml path")]
_MISSING = object()


def _text(value: Any) -> str:
    if isinstance(value, float):
        return yaml_float(value)
    return yaml.safe_dump(value, default_flow_style=True, width=4096).strip().removesuffix("...").strip()


def _run(action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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
    from rrm.settings import lookup

    overrides = _run(load_profile, name)
    current = yaml.safe_load(params.read_text()) if params.is_file() else {}
    if current:
        _run(expand, current, overrides, source=f"{profile_label(name)} applied to {params}")
    width = max(map(len, overrides))
    for key, value in overrides.items():
        now = lookup(current, key, _MISSING)
        note = "" if now is _MISSING else "  (same)" if now == value else f"  (now {_text(now)})"
        typer.echo(f"{key:<{width}}  {_text(value)}{note}")


@app.command()
def apply(name: NameArgument,
          voc_root: Annotated[Path | None, typer.Option(help="VOCdevkit/VOC2012 (data.root)")] = None,
          coco_root: Annotated[Path | None, typer.Option(
              help="`rrm prepare-coco`'s output (data.root of the coco profile)")] = None,
          sbd_root: Annotated[Path | None, typer.Option(
              help="SBD: benchmark_RELEASE/ (train.txt, val.txt) or a SegmentationClassAug/ folder")] = None,
          weights: Annotated[Path | None, typer.Option(help="ResNet-38 state dict for model.init")] = None,
          deeplab_weights: Annotated[Path | None, typer.Option(
              help="torchvision ImageNet ResNet-101 for deeplab.init.resnet101_v2")] = None,
          vgg_weights: Annotated[Path | None, typer.Option(
              help="torchvision ImageNet VGG-16 for deeplab.init.vgg16_largefov")] = None,
          params: ParamsOption = Path("params.yaml")) -> None:
    """Merge profile NAME into PARAMS (validated first, comments kept; builds train_aug.txt when missing)."""
    merged = _run(apply_profile, name, params, voc_root=voc_root, sbd_root=sbd_root, weights=weights,
                  deeplab_weights=deeplab_weights, vgg_weights=vgg_weights, coco_root=coco_root)
    inits = ", ".join(f"{arch} {path}" for arch, path in merged["deeplab"]["init"].items())
    typer.echo(f"{params}: profile {Path(str(name)).stem} applied; data.root {merged['data']['root']}, "
               f"model.init {merged['model']['init']}, deeplab.init {inits}")


@app.command("prepare-voc")
def prepare_voc_command(
        voc_root: Annotated[Path, typer.Argument(help="VOCdevkit/VOC2012")],
        sbd_root: Annotated[Path | None, typer.Option(help="SBD root or a SegmentationClassAug/ folder")
                            ] = None,
) -> None:
    """Write train_aug.txt if missing, check the lists' sizes and that every id has an image and a mask."""
    from rrm.data.voc_prepare import prepare_voc

    prepared = _run(prepare_voc, voc_root, sbd_root)
    sizes = ", ".join(f"{split} {n:,}" for split, n in prepared.counts.items())
    typer.echo(f"{voc_root}: {sizes}" + (" (train_aug.txt written)" if prepared.created_train_aug else ""))
