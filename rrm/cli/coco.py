"""`rrm prepare-coco` and `rrm check-coco`: MS COCO 2014 in the WSSS layout (rrm.data.coco_prepare)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rrm.cli import app


@app.command("prepare-coco")
def prepare_coco(
    coco_root: Annotated[Path, typer.Option(help="holds annotations/instances_{train,val}2014.json, train2014/, val2014/")],
    out: Annotated[Path, typer.Option(help="output root: SegmentationClass/, ImageSets/, ImageLabels/, JPEGImages/")],
    split: Annotated[list[str] | None, typer.Option(help="splits (default: train2014 and val2014)")] = None,
) -> None:
    """Write COCO's index masks (0 background, 1..80, 255 crowd), split lists and image-level labels.
    Resumable: complete masks are kept. Every bad or missing file is named; exit code 1 if any."""
    from rrm.data.coco_prepare import SPLITS
    from rrm.data.coco_prepare import prepare_coco as prepare

    report = prepare(coco_root, out, tuple(split or SPLITS))
    for line in report.problems:
        typer.echo(f"problem: {line}")
    for name, s in report.splits.items():
        typer.echo(f"{name}: {s.listed:,} of {s.images:,} annotated images listed; masks {s.written:,} written, "
                   f"{s.kept:,} already complete")
    raise typer.Exit(code=1 if report.problems else 0)


@app.command("check-coco")
def check_coco(
    root: Annotated[Path, typer.Argument(help="a root written by rrm prepare-coco")],
    split: Annotated[list[str] | None, typer.Option(help="splits (default: train2014 and val2014)")] = None,
) -> None:
    """Validate a COCO-layout root: photos, masks (0..80, 255), labels covering each mask's classes."""
    from rrm.data.coco_check import check_coco_layout
    from rrm.data.coco_prepare import SPLITS

    check = check_coco_layout(root, tuple(split or SPLITS))
    for line in check.errors:
        typer.echo(f"error: {line}")
    sizes = ", ".join(f"{name} {n:,}" for name, n in check.images.items())
    typer.echo(f"{'OK' if check.ok else f'FAILED: {len(check.errors)} error(s)'}; images: {sizes or 'none'}; "
               f"crowd/ignore pixels {int(check.pixels[255]):,}")
    raise typer.Exit(code=0 if check.ok else 1)
