"""Stage qualitative: the paper's Figure 4 on the first `figures.examples` val images.

Columns: image, CAM and reliable regions (the classifier, as evaluate_cam), one-step (`evaluate`
settings), two-step (`evaluate_deeplab` settings), ground truth.

    python stages/qualitative.py --cls models/cls.pt --onestep models/onestep.pt --deeplab models/deeplab.pt \
        --out reports/figures/qualitative.png
"""

from __future__ import annotations

import argparse

from rrm.data.voc import voc_split
from rrm.engine.device import resolve_device
from rrm.engine.qualitative import first_ids, qualitative_grid
from rrm.method.crf_pool import CRFPool
from rrm.models import deeplab, rrm_net
from rrm.models.registry import load_model
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cls", required=True, help="the classifier (stage train_cls)")
    parser.add_argument("--onestep", required=True, help="the one-step network (stage train_onestep)")
    parser.add_argument("--deeplab", required=True, help="the two-step DeepLab (stage train_deeplab)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    p = load_settings(args.params)
    dev = resolve_device(p.device)
    val = voc_split(p.data, p.data.val_split, image_labels=True)  # the CAM and mining columns use the labels
    # CRFs inline: for a handful of images, starting worker processes (each imports torch) costs more than
    # the CRFs themselves (8 embedded images: ~3 s inline, ~13 s with 2 workers).
    with CRFPool(0) as pool:
        titles = qualitative_grid(
            args.out, val, first_ids(val, p.figures.examples), classifier=load_model(args.cls, rrm_net.ARCHS, dev, dataset=p.data.dataset)[0],
            onestep=load_model(args.onestep, rrm_net.ARCHS, dev, dataset=p.data.dataset)[0],
            deeplab=load_model(args.deeplab, deeplab.ARCHS, dev, dataset=p.data.dataset)[0], cam_scales=p.mining.cam_scales,
            mining=p.mining.params, onestep_inference=p.evaluate, deeplab_inference=p.evaluate_deeplab, pool=pool,
            device=dev)
    print(f"{args.out}: {', '.join(titles)}")


if __name__ == "__main__":
    main()
