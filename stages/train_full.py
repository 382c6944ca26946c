"""Stage train_full: the same network, from the same classifier weights as one-step RRM, trained on
ground-truth masks instead of reliable regions (the full-supervision reference)."""

from __future__ import annotations

from rrm.engine.distributed import launch
from rrm.engine.train import train
from rrm.experiments.pipeline import train_settings
from rrm.experiments.settings import load_params


def main() -> None:
    params = load_params()
    settings = train_settings(params, "train_full", mode="supervised", out_model="models/full.pt",
                              init="models/cls.pt")
    if not launch(settings.nproc):  # nproc > 1: re-run this script under torchrun
        train(settings)


if __name__ == "__main__":
    main()
