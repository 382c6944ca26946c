"""Stage export_pseudo: the one-step network labels the training split for the two-step DeepLab."""

from __future__ import annotations

from rrm.engine.crf_pool import CRFPool
from rrm.engine.evaluate import export_pseudo
from rrm.experiments.pipeline import crf_params, dataset, device, load_model
from rrm.experiments.settings import load_params


def main() -> None:
    params = load_params()
    section = params["export_pseudo"]
    crf = crf_params(params["evaluate"]["crf"]) if section["crf"] else None
    with CRFPool(params["mining"]["pool_processes"]) as pool:
        report = export_pseudo(
            load_model("models/onestep.pt", device(params)), dataset(params, section["split"], weak=True),
            "data/pseudo", "reports/pseudo", scales=section["scales"], flip=section["flip"], crf=crf,
            pool=pool, device=device(params), n_examples=params["evaluate"]["figures"])
    print(f"pseudo labels: mIoU {report['miou']:.4f} on {report['n_scored']} images with masks")


if __name__ == "__main__":
    main()
