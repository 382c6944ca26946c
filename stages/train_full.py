"""Stage train_full: the same network, from the same classifier weights as one-step RRM, trained on
ground-truth masks instead of reliable regions (the full-supervision reference)."""

from __future__ import annotations

from rrm.config import load_params
from rrm.pipeline import train_settings
from rrm.train import train


def main() -> None:
    params = load_params()
    train(train_settings(params, "train_full", mode="supervised", out_model="models/full.pt",
                         init="models/cls.pt"))


if __name__ == "__main__":
    main()
