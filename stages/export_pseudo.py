"""Stage export_pseudo: the one-step network labels the training split for the two-step DeepLab.

    python stages/export_pseudo.py --model models/onestep.pt --masks data/pseudo --report reports/pseudo
"""

from __future__ import annotations

import argparse

from rrm.experiments.pipeline import export_pseudo
from rrm.experiments.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the one-step network (stage train_onestep)")
    parser.add_argument("--masks", required=True, help="folder the pseudo masks are written to")
    parser.add_argument("--report", required=True, help="report folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    report = export_pseudo(load_settings(args.params), args.model, args.masks, args.report)
    print(f"pseudo labels: mIoU {report['miou']:.4f} on {report['n_scored']} images with masks")


if __name__ == "__main__":
    main()
