"""Stage train_cls: multi-label classification training of ResNet-38 (the CAM source).

Plays the role of the authors' "ResNet-38 fine-tuned for VOC classification" weights, from which
one-step RRM starts; its CAMs are also the CAM pseudo-label baseline (stage evaluate_cam).
"""

from __future__ import annotations

from rrm.engine.distributed import launch
from rrm.engine.train import train
from rrm.experiments.pipeline import train_settings
from rrm.experiments.settings import load_params


def main() -> None:
    params = load_params()
    settings = train_settings(params, "train_cls", mode="cls", out_model="models/cls.pt",
                              init=params["model"]["init"])
    if not launch(settings.nproc):  # nproc > 1: re-run this script under torchrun
        train(settings)


if __name__ == "__main__":
    main()
