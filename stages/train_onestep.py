"""Stage train_onestep: RRM's one-step training (CAM -> reliable regions -> joint segmentation loss)."""

from __future__ import annotations

from rrm.config import load_params
from rrm.pipeline import train_settings
from rrm.train import train


def main() -> None:
    params = load_params()
    train(train_settings(params, "train_onestep", mode="onestep", out_model="models/onestep.pt",
                         init="models/cls.pt"))


if __name__ == "__main__":
    main()
