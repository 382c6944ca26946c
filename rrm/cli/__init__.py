"""`rrm` command line: the tools around the pipeline (the pipeline itself runs with `dvc repro`).

Settings come from params.yaml (the --params option); options are for paths and overrides only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)

Params = Annotated[Path, typer.Option("--params", help="params.yaml to read settings from")]
Checkpoint = Annotated[Path, typer.Argument(help="a checkpoint written by the pipeline (models/*.pt)")]


def _model_and_settings(params_path: Path, checkpoint: Path, crf: bool) -> tuple[Any, object, dict]:
    """params.yaml, the checkpoint's network on the configured device, and its inference settings (the
    params.yaml section its registry entry names: `evaluate` for ResNet-38, `evaluate_deeplab` for DeepLab)
    with `spec`, the dataset the checkpoint records (rrm.data.datasets)."""
    from rrm.engine.device import resolve_device
    from rrm.models import deeplab, rrm_net
    from rrm.models.registry import load_model
    from rrm.settings import load_settings

    cfg = load_settings(params_path)
    model, arch, spec = load_model(checkpoint, {**rrm_net.ARCHS, **deeplab.ARCHS}, resolve_device(cfg.device))
    section = getattr(cfg, arch.inference)
    settings = {"scales": section.scales, "flip": section.flip, "crf": section.crf if crf else None,
                "device": resolve_device(cfg.device), "spec": spec}
    return cfg, model, settings


@app.command("generate-data")
def generate_data(root: Annotated[Path, typer.Argument(help="output VOC-layout folder")],
                  params: Params = Path("params.yaml")) -> None:
    """Write the embedded dataset (prepare_data settings of params.yaml) to ROOT."""
    from rrm.data.synthetic import generate_dataset
    from rrm.settings import load_params

    section = load_params(params)["prepare_data"]
    stats = generate_dataset(root, seed=section["seed"], image_size=section["image_size"],
                             n_train=section["n_train"], n_extra=section["n_extra"], n_val=section["n_val"],
                             n_test=section["n_test"], max_objects=section["max_objects"])
    typer.echo(f"wrote {root}: {stats.get('splits', stats)}")


@app.command("check-data")
def check_data(root: Annotated[Path, typer.Argument(help="dataset root (e.g. VOCdevkit/VOC2012, data/coco)")],
               split: Annotated[list[str] | None, typer.Option(help="splits to check (default: all lists)")] = None,
               labels_file: Annotated[Path | None, typer.Option(
                   help="image-level labels (data.labels_file: PSA's cls_labels.npy or text) to compare with the masks")
               ] = None,
               dataset: Annotated[str | None, typer.Option(
                   help="voc | coco: classes and layout of ROOT (default: data.dataset of --params; voc without that file)")] = None,
               params: Params = Path("params.yaml")) -> None:
    """Validate a dataset (VOC's or COCO's layout) end to end and print per-class image and pixel counts."""
    from rrm.data.check import check_dataset, format_report
    from rrm.data.datasets import DATASETS, get_dataset

    if dataset is None:
        from rrm.settings import load_settings

        dataset = load_settings(params).data.dataset if params.is_file() else "voc"
    if dataset not in DATASETS:
        raise typer.BadParameter(f"--dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    report = check_dataset(root, split or None, labels_file=labels_file, dataset=get_dataset(dataset))
    typer.echo(format_report(report))
    raise typer.Exit(code=1 if report.errors else 0)


@app.command()
def evaluate(checkpoint: Checkpoint,
             out: Annotated[Path, typer.Option(help="report folder")] = Path("reports/eval"),
             split: Annotated[str, typer.Option(help="split of data.root to score")] = "val",
             crf: Annotated[bool, typer.Option(help="also score dense-CRF post-processing")] = True,
             params: Params = Path("params.yaml")) -> None:
    """Score a checkpoint on a split of data.root (metrics.json, per_class.csv, pictures)."""
    from rrm.data.voc import voc_split
    from rrm.engine.evaluate import evaluate_segmentation
    from rrm.method.crf_pool import CRFPool

    cfg, model, settings = _model_and_settings(params, checkpoint, crf)
    if settings["spec"].name != cfg.data.dataset:
        typer.echo(f"error: {checkpoint}: a network trained on {settings['spec'].name!r}; "
                   f"data.dataset is {cfg.data.dataset!r}", err=True)
        raise typer.Exit(code=1)
    with CRFPool(cfg.mining.pool_processes) as pool:
        report = evaluate_segmentation(model, voc_split(cfg.data, split), out, pool=pool, **settings)
    typer.echo(f"mIoU {report['miou']:.4f}" + (f", with CRF {report['miou_crf']:.4f}" if crf else ""))


@app.command()
def predict(checkpoint: Checkpoint,
            inputs: Annotated[list[Path], typer.Argument(help="images, folders of images, or .txt lists")],
            out: Annotated[Path, typer.Option(help="writes OUT/masks/*.png and OUT/overlays/*.jpg")] = Path(
                "predictions"),
            crf: Annotated[bool, typer.Option(help="refine with the dense CRF")] = False,
            params: Params = Path("params.yaml")) -> None:
    """Predict palette masks and overlays for images of any size (unreadable ones are skipped and counted)."""
    from rrm.engine.predict import list_images, predict_images

    _, model, settings = _model_and_settings(params, checkpoint, crf)
    with warnings.catch_warnings(record=True) as caught:  # shown as plain lines, not Python warnings
        warnings.simplefilter("always")
        summary = predict_images(model, list_images(inputs), out, **settings)
    skipped = [f"skipped {path}: {reason}" for path, reason in summary.skipped]
    for message in dict.fromkeys(str(w.message) for w in caught):
        if message not in skipped:
            typer.echo(f"warning: {message}", err=True)
    for line in skipped:
        typer.echo(line)
    typer.echo(f"wrote {len(summary.written)} masks and overlays to {out}; skipped {len(summary.skipped)}")


@app.command("export-server")
def export_server(checkpoint: Checkpoint,
                  root: Annotated[Path, typer.Option(help="VOC root holding the split's JPEGImages")],
                  split: Annotated[str, typer.Option(help="split to predict")] = "test",
                  out: Annotated[Path, typer.Option(help="output folder")] = Path("server"),
                  comp: Annotated[str, typer.Option(help="comp6 (extra data, e.g. SBD) or comp5")] = "comp6",
                  crf: Annotated[bool, typer.Option(help="refine with the dense CRF")] = True,
                  params: Params = Path("params.yaml")) -> None:
    """Write predictions in the VOC devkit's results layout plus the archive the evaluation server takes."""
    from rrm.engine.predict import export_voc_server

    _, model, settings = _model_and_settings(params, checkpoint, crf)
    if settings.pop("spec").name != "voc":
        typer.echo(f"error: {checkpoint}: the VOC evaluation server scores VOC networks only", err=True)
        raise typer.Exit(code=1)
    archive = export_voc_server(model, root, split, out, comp=comp, **settings)
    typer.echo(f"wrote {archive}")


# Command groups kept in their own modules (rrm/cli/<name>.py), one registration line each.
import rrm.cli.coco  # noqa: E402, F401  (registers `rrm prepare-coco` and `rrm check-coco` on app)
import rrm.cli.convert_weights  # noqa: E402, F401  (registers `rrm convert-weights` on app)
import rrm.cli.crf  # noqa: E402, F401  (registers `rrm crf` on app)
from rrm.cli import profile, seeds, tables  # noqa: E402

app.add_typer(profile.app, name="profile", help="real-data profiles (VOC, COCO): list, show, apply, prepare-voc")
app.add_typer(seeds.app, name="seeds", help="seeds as an axis: run N seeds, spread, paired summary, reproduction check")
app.add_typer(tables.app, name="tables", help="the paper's Tables 1-5 as DVC experiments: run, report")

if __name__ == "__main__":
    app()
