"""Stage train_onestep: RRM's one-step training (CAM -> reliable regions -> joint segmentation loss)."""

from __future__ import annotations

from rrm.engine.distributed import launch
from rrm.engine.train import train
from rrm.experiments.pipeline import train_settings
from rrm.experiments.settings import load_params


def main() -> None:
    params = load_params()
    settings = train_settings(params, "train_onestep", mode="onestep", out_model="models/onestep.pt",
                              init="models/cls.pt")
    if not launch(settings.nproc):  # nproc > 1: re-run this script under torchrun
        train(settings)


if __name__ == "__main__":
    main()
