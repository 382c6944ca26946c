"""`rrm convert-weights`: PSA's ImageNet ResNet-38 (the MXNet `.params` file users download) as a PyTorch
state dict under this project's ResNet-38 names, read without MXNet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rrm.cli import app
from rrm.io import save_torch
from rrm.models.resnet38 import ResNet38
from rrm.models.resnet38_mxnet import resnet38_state, resnet38_width
from rrm.models.weights import load_state_dict_checked


@app.command("convert-weights")
def convert_weights(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                           help="MXNet file, e.g. ilsvrc-cls_rna-a1_cls1000_ep-0001.params")],
    out: Annotated[Path, typer.Argument(dir_okay=False, help="PyTorch state dict to write (.pth)")],
) -> None:
    """Convert PSA's MXNet ResNet-38 to a .pth that loads strictly into ResNet-38 (model.init also takes the
    .params file itself). The ImageNet classifier linear1000 is dropped and listed."""
    try:
        state, dropped = resnet38_state(source)
        width = resnet38_width(state, source=str(source))
        load_state_dict_checked(ResNet38(width=width), state, source=str(source))
    except ValueError as error:  # unreadable file (with its byte offset) or not PSA's ResNet-38
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    save_torch(out, state)
    if dropped:
        typer.echo(f"dropped the ImageNet classifier: {', '.join(dropped)}")
    typer.echo(f"wrote {out}: {len(state)} tensors of ResNet-38 at width {width:g}, from {source}")
