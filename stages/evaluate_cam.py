"""Stage evaluate_cam: quality of the classifier's CAM pseudo labels and of the reliable regions.

    python stages/evaluate_cam.py --model models/cls.pt --out reports/cam
"""

from __future__ import annotations

import argparse

from rrm.experiments.pipeline import evaluate_cam
from rrm.experiments.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the classifier (stage train_cls)")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    report = evaluate_cam(load_settings(args.params), args.model, args.out)
    print(f"CAM pseudo labels: mIoU {report['miou']:.4f}; reliable regions: precision "
          f"{report['reliable_precision']:.4f} on {report['reliable_fraction']:.1%} of pixels")


if __name__ == "__main__":
    main()
