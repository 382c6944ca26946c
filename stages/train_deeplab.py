"""Stage train_deeplab: two-step RRM, DeepLab trained on the one-step network's pseudo masks.

DeepLab starts from deeplab.init (a torchvision ImageNet file, as published) or, where there is none
(the embedded data), from random weights.
"""

from __future__ import annotations

from pathlib import Path

from rrm.engine.distributed import launch
from rrm.engine.train import train
from rrm.experiments.pipeline import train_settings
from rrm.experiments.settings import load_params


def main() -> None:
    params = load_params()
    deeplab = params["deeplab"]
    settings = train_settings(params, "train_deeplab", mode="supervised", out_model="models/deeplab.pt",
                              arch=deeplab["arch"], init=deeplab["init"],
                              mask_dir=str(Path("data/pseudo").resolve()), split=params["export_pseudo"]["split"])
    if not launch(settings.nproc):  # nproc > 1: re-run this script under torchrun
        train(settings)


if __name__ == "__main__":
    main()
