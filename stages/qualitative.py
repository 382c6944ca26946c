"""Stage qualitative: the paper's Figure 4 on the first `evaluate.figures` val images.

Columns: image, CAM and reliable regions (the classifier, as evaluate_cam), one-step (`evaluate`
settings), two-step (`evaluate_deeplab` settings), ground truth.

    python stages/qualitative.py --cls models/cls.pt --onestep models/onestep.pt --deeplab models/deeplab.pt \
        --out reports/figures/qualitative.png
"""

from __future__ import annotations

import argparse

from rrm.experiments.pipeline import qualitative
from rrm.experiments.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cls", required=True, help="the classifier (stage train_cls)")
    parser.add_argument("--onestep", required=True, help="the one-step network (stage train_onestep)")
    parser.add_argument("--deeplab", required=True, help="the two-step DeepLab (stage train_deeplab)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    titles = qualitative(load_settings(args.params), args.out, classifier=args.cls, onestep=args.onestep,
                         deeplab=args.deeplab)
    print(f"{args.out}: {', '.join(titles)}")


if __name__ == "__main__":
    main()
