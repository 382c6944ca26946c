"""Stage evaluate_deeplab: score the two-step DeepLab on the val split with the `evaluate_deeplab` section's
inference settings (scales, flip, crf).

    python stages/evaluate_deeplab.py --model models/deeplab.pt --out reports/twostep
"""

from __future__ import annotations

import argparse

from rrm.engine.evaluate import evaluate_stage
from rrm.models.deeplab import ARCHS
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the DeepLab written by train_deeplab")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_settings(args.params)
    report = evaluate_stage(params, args.model, args.out, ARCHS, params.evaluate_deeplab)
    print(f"{args.model}: mIoU {report['miou']:.4f}, with CRF {report['miou_crf']:.4f}")


if __name__ == "__main__":
    main()
