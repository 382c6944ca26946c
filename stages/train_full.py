"""Stage train_full: the same network, from the same classifier weights as one-step RRM, trained on
ground-truth masks instead of reliable regions (the full-supervision reference).

    python stages/train_full.py --init models/cls.pt --out models/full.pt \
        --checkpoint checkpoints/train_full/last.pt --live reports/train_full/live
"""

from __future__ import annotations

import argparse

from rrm.engine.steps import supervised_steps
from rrm.experiments.training import run_training, training_run
from rrm.models.rrm_net import ARCHS
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", required=True, help="the classifier to start from (stage train_cls)")
    parser.add_argument("--out", required=True, help="the trained network")
    parser.add_argument("--checkpoint", required=True, help="resumable state while training (removed at the end)")
    parser.add_argument("--live", required=True, help="dvclive folder of the loss curves")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    run_training(training_run(load_settings(args.params), "train_full", init=args.init, out_model=args.out,
                              checkpoint=args.checkpoint, live_dir=args.live), ARCHS, supervised_steps)


if __name__ == "__main__":
    main()
