"""Stage train_cls: multi-label classification training of ResNet-38 (the CAM source), from model.init.

Plays the role of the authors' "ResNet-38 fine-tuned for VOC classification" weights, from which
one-step RRM starts; its CAMs are also the CAM pseudo-label baseline (stage evaluate_cam).

    python stages/train_cls.py --out models/cls.pt --checkpoint checkpoints/train_cls/last.pt \
        --live reports/train_cls/live
"""

from __future__ import annotations

import argparse

from rrm.engine.steps import classifier_steps
from rrm.experiments.training import run_training, training_run
from rrm.models.rrm_net import ARCHS
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the trained classifier")
    parser.add_argument("--checkpoint", required=True, help="resumable state while training (removed at the end)")
    parser.add_argument("--live", required=True, help="dvclive folder of the loss curves")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    run_training(training_run(load_settings(args.params), "train_cls", out_model=args.out,
                              checkpoint=args.checkpoint, live_dir=args.live), ARCHS, classifier_steps)


if __name__ == "__main__":
    main()
