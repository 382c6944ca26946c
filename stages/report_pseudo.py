"""Stage report_pseudo: the pseudo masks of export_pseudo scored against the split's masks where they exist.

    python stages/report_pseudo.py --masks data/pseudo --report reports/pseudo
"""

from __future__ import annotations

import argparse

from rrm.data.voc import voc_split
from rrm.engine.pseudo_report import score_pseudo
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", required=True, help="folder of pseudo masks (stage export_pseudo)")
    parser.add_argument("--report", required=True, help="report folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    p = load_settings(args.params)
    split = voc_split(p.data, p.export_pseudo.split, weak=True)
    report = score_pseudo(split, args.masks, args.report, spec=split.spec, n_examples=p.figures.examples)
    print(f"pseudo labels: mIoU {report['miou']:.4f} on {report['n_scored']} images with masks")


if __name__ == "__main__":
    main()
