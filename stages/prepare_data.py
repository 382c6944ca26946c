"""Stage prepare_data: generate the embedded VOC-layout dataset and record the statistics of data.root (in
data.dataset's layout).

    python stages/prepare_data.py --out data/embedded --stats reports/data/stats.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrm.data.datasets import get_dataset
from rrm.data.synthetic import dataset_stats, generate_dataset
from rrm.io import write_json
from rrm.settings import Params, load_settings


def prepare_data(p: Params, out: str, stats: str) -> None:
    """The embedded dataset at `out` (unless prepare_data.generate is false: real data lives at data.root),
    and the statistics of data.root."""
    s = p.prepare_data
    if s.generate:
        generate_dataset(Path(out), seed=s.seed, image_size=s.image_size, n_train=s.n_train, n_extra=s.n_extra,
                         n_val=s.n_val, n_test=s.n_test, max_objects=s.max_objects)
    else:
        Path(out).mkdir(parents=True, exist_ok=True)
    write_json(stats, dataset_stats(Path(p.data.root), get_dataset(p.data.dataset)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder of the generated dataset")
    parser.add_argument("--stats", required=True, help="JSON file of the dataset statistics")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    prepare_data(load_settings(args.params), args.out, args.stats)


if __name__ == "__main__":
    main()
