"""Stages evaluate_onestep / evaluate_full / evaluate_deeplab: score a trained network on the val split.

    python stages/evaluate.py --model models/onestep.pt --out reports/onestep --section evaluate

--section names the params.yaml section with the inference settings (scales, flip, crf): `evaluate`
for the ResNet-38 networks, `evaluate_deeplab` for DeepLab.
"""

from __future__ import annotations

import argparse

from rrm.experiments.pipeline import evaluate
from rrm.experiments.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint written by a training stage")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--section", required=True, choices=["evaluate", "evaluate_deeplab"])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_settings(args.params)
    report = evaluate(params, args.model, args.out, getattr(params, args.section))
    print(f"{args.model}: mIoU {report['miou']:.4f}, with CRF {report['miou_crf']:.4f}")


if __name__ == "__main__":
    main()
