"""Stage train_deeplab: two-step RRM, DeepLab trained on the one-step network's pseudo masks.

DeepLab starts from deeplab.init (a torchvision ImageNet file, as published) or, where there is none
(the embedded data), from random weights.

    python stages/train_deeplab.py --masks data/pseudo --out models/deeplab.pt \
        --checkpoint checkpoints/train_deeplab/last.pt --live reports/train_deeplab/live
"""

from __future__ import annotations

import argparse

from rrm.engine.steps import supervised_steps
from rrm.experiments.training import run_training, training_run
from rrm.models.deeplab import ARCHS
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", required=True, help="folder of pseudo masks (stage export_pseudo)")
    parser.add_argument("--out", required=True, help="the trained DeepLab")
    parser.add_argument("--checkpoint", required=True, help="resumable state while training (removed at the end)")
    parser.add_argument("--live", required=True, help="dvclive folder of the loss curves")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    run_training(training_run(load_settings(args.params), "train_deeplab", masks=args.masks, out_model=args.out,
                              checkpoint=args.checkpoint, live_dir=args.live), ARCHS, supervised_steps)


if __name__ == "__main__":
    main()
