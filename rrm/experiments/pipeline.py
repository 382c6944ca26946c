"""What each pipeline stage runs, built from params.yaml's dataclasses (rrm.experiments.settings) and the
paths the stage's command passes. Stage scripts and the CLI call these, so a setting is read in one place.

rrm.engine.train, rrm.engine.qualitative and rrm.models.deeplab import torchvision (augmentation, ResNet
blocks), whose import pulls in torch._dynamo (~3 s): they are imported where used, so the evaluation
stages start without them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from rrm.data.voc import VOCSegmentation
from rrm.engine.recipe import TrainSettings
from rrm.experiments.settings import Data, Params, Prediction, resolve_device
from rrm.io import load_torch, write_json
from rrm.models.rrm_net import build_rrm

MODES = {"train_cls": "cls", "train_onestep": "onestep", "train_full": "supervised", "train_deeplab": "supervised"}


def dataset(data: Data, split: str, *, weak: bool = False, image_labels: bool = False,
            mask_dir: str | None = None) -> VOCSegmentation:
    """`split` of the configured VOC-layout root (masks from `mask_dir`, else data.mask_dir's choice).
    Where the image-level labels are used (`weak`, `image_labels`: CAMs and mining) they come from
    data.labels_file when set, which must then cover the split; scoring reads the masks only."""
    labels_file = data.labels_file if weak or image_labels else None
    return VOCSegmentation(data.root, split, mask_dir=mask_dir or data.mask_dir, labels_file=labels_file, weak=weak)


def training_run(p: Params, stage: str, *, out_model: str, checkpoint: str, live_dir: str | None,
                 init: str | None = None, masks: str | None = None) -> TrainSettings:
    """The run of a training stage (a key of MODES). `init`: the classifier the segmentation stages start
    from (train_onestep, train_full; train_cls and train_deeplab start from model.init / deeplab.init);
    `masks`: the pseudo masks train_deeplab learns."""
    if stage not in MODES:
        raise ValueError(f"training stage {stage!r}: expected one of {tuple(MODES)}")
    deeplab = stage == "train_deeplab"
    if stage in ("train_onestep", "train_full") and init is None:
        raise ValueError(f"{stage} starts from the classifier: pass init (models/cls.pt)")
    if deeplab and masks is None:
        raise ValueError("train_deeplab learns pseudo masks: pass masks (data/pseudo)")
    arch = p.deeplab.arch if deeplab else "resnet38"
    if stage in ("train_cls", "train_deeplab"):
        init = p.deeplab.init if deeplab else p.model.init
    return TrainSettings(
        mode=MODES[stage], arch=arch, width=p.deeplab.width if deeplab else p.model.width,
        head_bias=p.model.head_bias,
        batch_norm=arch == "vgg16_largefov" and p.deeplab.batch_norm, init=init,
        data_root=p.data.root, split=p.export_pseudo.split if deeplab else p.data.train_split,
        mask_dir=str(Path(masks).resolve()) if masks is not None else p.data.mask_dir,
        labels_file=None if MODES[stage] == "supervised" else p.data.labels_file,
        out_model=out_model, checkpoint=checkpoint, live_dir=live_dir, seed=p.seed,
        device=str(resolve_device(p.device)), amp=p.amp, num_workers=p.data.num_workers, nproc=p.nproc,
        recipe=getattr(p, stage), mining=p.mining if stage == "train_onestep" else None)


def run_training(settings: TrainSettings) -> None:
    """Train in this process, or with nproc > 1 re-run this script under torchrun (DDP)."""
    from rrm.engine.distributed import launch
    from rrm.engine.train import train

    if not launch(settings.nproc):
        train(settings)


def prepare_data(p: Params, out: str, stats: str) -> None:
    """The embedded dataset at `out` (unless prepare_data.generate is false: real data lives at data.root),
    and the statistics of data.root."""
    from rrm.data.synthetic import dataset_stats, generate_dataset

    s = p.prepare_data
    if s.generate:
        generate_dataset(Path(out), seed=s.seed, image_size=s.image_size, n_train=s.n_train, n_extra=s.n_extra,
                         n_val=s.n_val, n_test=s.n_test, max_objects=s.max_objects)
    else:
        Path(out).mkdir(parents=True, exist_ok=True)
    write_json(stats, dataset_stats(Path(p.data.root)))


def evaluate(p: Params, model_path: str, out_dir: str, prediction: Prediction) -> dict:
    """Score a trained network on the val split with `prediction`'s scales, flip and CRF."""
    from rrm.engine.evaluate import evaluate_segmentation
    from rrm.method.crf_pool import CRFPool

    dev = resolve_device(p.device)
    with CRFPool(p.mining.pool_processes) as pool:
        return evaluate_segmentation(
            load_model(model_path, dev), dataset(p.data, p.data.val_split), out_dir, scales=prediction.scales,
            flip=prediction.flip, crf=prediction.crf, pool=pool, device=dev, n_examples=p.evaluate.figures)


def evaluate_cam(p: Params, model_path: str, out_dir: str) -> dict:
    """CAM pseudo labels and reliable regions of the classifier, scored on evaluate_cam.split."""
    from rrm.engine.evaluate import evaluate_cam as score
    from rrm.method.crf_pool import CRFPool

    dev = resolve_device(p.device)
    with CRFPool(p.mining.pool_processes) as pool:
        return score(load_model(model_path, dev), dataset(p.data, p.evaluate_cam.split, image_labels=True), out_dir,
                     scales=p.mining.cam_scales, bg_threshold=p.evaluate_cam.bg_threshold,
                     mining=p.mining.params, pool=pool, device=dev, n_examples=p.evaluate.figures)


def export_pseudo(p: Params, model_path: str, masks_dir: str, report_dir: str) -> dict:
    """The one-step network's labels for export_pseudo.split (the two-step DeepLab's training masks)."""
    from rrm.engine.evaluate import export_pseudo as export
    from rrm.method.crf_pool import CRFPool

    s, dev = p.export_pseudo, resolve_device(p.device)
    with CRFPool(p.mining.pool_processes) as pool:
        return export(load_model(model_path, dev), dataset(p.data, s.split, weak=True), masks_dir, report_dir,
                      scales=s.scales, flip=s.flip, crf=p.evaluate.crf if s.crf else None, pool=pool,
                      device=dev, n_examples=p.evaluate.figures)


def qualitative(p: Params, out: str, *, classifier: str, onestep: str, deeplab: str) -> list[str]:
    """The paper's Figure 4 on the first evaluate.figures val images; returns the column titles."""
    from rrm.engine.qualitative import Inference, first_ids, qualitative_grid
    from rrm.method.crf_pool import CRFPool

    def inference(s: Prediction) -> Inference:
        return Inference(scales=s.scales, flip=s.flip, crf=s.crf)

    dev = resolve_device(p.device)
    val = dataset(p.data, p.data.val_split, image_labels=True)  # the CAM and mining columns use the labels
    # CRFs inline: for a handful of images, starting worker processes (each imports torch) costs more than
    # the CRFs themselves (8 embedded images: ~3 s inline, ~13 s with 2 workers).
    with CRFPool(0) as pool:
        return qualitative_grid(
            out, val, first_ids(val, p.evaluate.figures), classifier=load_model(classifier, dev),
            onestep=load_model(onestep, dev), deeplab=load_model(deeplab, dev), cam_scales=p.mining.cam_scales,
            mining=p.mining.params, onestep_inference=inference(p.evaluate),
            deeplab_inference=inference(p.evaluate_deeplab), pool=pool, device=dev)


def load_model(path: str | Path, map_device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a one-step (ResNet-38) or DeepLab network from one of our checkpoints."""
    state = load_torch(path)
    meta = state.get("meta") if isinstance(state, dict) else None
    if not meta or "model" not in state:
        raise ValueError(f"{path}: not an rrm checkpoint (expected 'model' and 'meta' entries)")
    if meta["arch"] == "resnet38":
        model = build_rrm(width=meta["width"])
    else:
        from rrm.models.deeplab import build_deeplab

        model = build_deeplab(arch=meta["arch"], width=meta["width"], batch_norm=meta.get("batch_norm", False))
    model.load_state_dict(state["model"])
    return model.to(map_device).eval()
