"""Stages evaluate_onestep / evaluate_full / evaluate_deeplab: score a trained network on the val split.

    python stages/evaluate.py MODEL OUT_DIR [SECTION]

SECTION names the params.yaml section with the inference settings (scales, flip, crf): `evaluate`
for the ResNet-38 networks, `evaluate_deeplab` for DeepLab.
"""

from __future__ import annotations

import sys

from rrm.engine.crf_pool import CRFPool
from rrm.engine.evaluate import evaluate_segmentation
from rrm.experiments.pipeline import crf_params, dataset, device, load_model
from rrm.experiments.settings import load_params


def main(model_path: str, out_dir: str, section: str = "evaluate") -> None:
    params = load_params()
    settings = params[section]
    with CRFPool(params["mining"]["pool_processes"]) as pool:
        report = evaluate_segmentation(
            load_model(model_path, device(params)), dataset(params, "val_split"), out_dir,
            scales=settings["scales"], flip=settings["flip"], crf=crf_params(settings["crf"]), pool=pool,
            device=device(params), n_examples=params["evaluate"]["figures"])
    print(f"{model_path}: mIoU {report['miou']:.4f}, with CRF {report['miou_crf']:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
