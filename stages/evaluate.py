"""Stages evaluate_onestep / evaluate_full: score a trained ResNet-38 network on the val split with the
`evaluate` section's inference settings (scales, flip, crf).

    python stages/evaluate.py --model models/onestep.pt --out reports/onestep
"""

from __future__ import annotations

import argparse

from rrm.engine.evaluate import evaluate_stage
from rrm.models.rrm_net import ARCHS
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint written by train_onestep or train_full")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_settings(args.params)
    report = evaluate_stage(params, args.model, args.out, ARCHS, params.evaluate)
    print(f"{args.model}: mIoU {report['miou']:.4f}, with CRF {report['miou_crf']:.4f}")


if __name__ == "__main__":
    main()
