"""Stage evaluate_cam: quality of the classifier's CAM pseudo labels and of the reliable regions.

    python stages/evaluate_cam.py --model models/cls.pt --out reports/cam
"""

from __future__ import annotations

import argparse

from rrm.data.voc import voc_split
from rrm.engine.device import resolve_device
from rrm.engine.evaluate_cam import evaluate_cam
from rrm.method.crf_pool import CRFPool
from rrm.models.registry import load_model
from rrm.models.rrm_net import ARCHS
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the classifier (stage train_cls)")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    p = load_settings(args.params)
    dev = resolve_device(p.device)
    model, *_ = load_model(args.model, ARCHS, dev, dataset=p.data.dataset)
    split = voc_split(p.data, p.evaluate_cam.split, image_labels=True)
    with CRFPool(p.mining.pool_processes) as pool:
        report = evaluate_cam(model, split, args.out, spec=split.spec, scales=p.mining.cam_scales,
                              bg_threshold=p.evaluate_cam.bg_threshold, mining=p.mining.params, pool=pool,
                              device=dev, n_examples=p.figures.examples)
    print(f"CAM pseudo labels: mIoU {report['miou']:.4f}; reliable regions: precision "
          f"{report['reliable_precision']:.4f} on {report['reliable_fraction']:.1%} of pixels")


if __name__ == "__main__":
    main()
