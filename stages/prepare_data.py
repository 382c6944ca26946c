"""Stage prepare_data: generate the embedded VOC-layout dataset and record its statistics."""

from __future__ import annotations

from pathlib import Path

from rrm.data.synthetic import dataset_stats, generate_dataset
from rrm.experiments.settings import load_params
from rrm.io import write_json

OUT = Path("data/embedded")


def main() -> None:
    params = load_params()
    section = params["prepare_data"]
    if section["generate"]:
        generate_dataset(OUT, seed=section["seed"], image_size=section["image_size"],
                         n_train=section["n_train"], n_extra=section["n_extra"], n_val=section["n_val"],
                         n_test=section["n_test"], max_objects=section["max_objects"])
    else:
        OUT.mkdir(parents=True, exist_ok=True)  # real data lives at data.root; nothing to generate
    write_json("reports/data/stats.json", dataset_stats(Path(params["data"]["root"])))


if __name__ == "__main__":
    main()
