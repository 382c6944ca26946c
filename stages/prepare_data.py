"""Stage prepare_data: generate the embedded VOC-layout dataset and record the statistics of data.root.

    python stages/prepare_data.py --out data/embedded --stats reports/data/stats.json
"""

from __future__ import annotations

import argparse

from rrm.experiments.pipeline import prepare_data
from rrm.experiments.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder of the generated dataset")
    parser.add_argument("--stats", required=True, help="JSON file of the dataset statistics")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    prepare_data(load_settings(args.params), args.out, args.stats)


if __name__ == "__main__":
    main()
