"""Stage evaluate_cam: quality of the classifier's CAM pseudo labels and of the reliable regions on train."""

from __future__ import annotations

from rrm.engine.crf_pool import CRFPool
from rrm.engine.evaluate import evaluate_cam
from rrm.experiments.pipeline import dataset, device, load_model, mining_params
from rrm.experiments.settings import load_params


def main() -> None:
    params = load_params()
    section = params["evaluate_cam"]
    with CRFPool(params["mining"]["pool_processes"]) as pool:
        report = evaluate_cam(
            load_model("models/cls.pt", device(params)), dataset(params, section["split"]), "reports/cam",
            scales=params["mining"]["cam_scales"], bg_threshold=section["bg_threshold"],
            mining=mining_params(params), pool=pool, device=device(params),
            n_examples=params["evaluate"]["figures"])
    print(f"CAM pseudo labels: mIoU {report['miou']:.4f}; reliable regions: precision "
          f"{report['reliable_precision']:.4f} on {report['reliable_fraction']:.1%} of pixels")


if __name__ == "__main__":
    main()
