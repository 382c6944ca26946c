"""Stage qualitative: the paper's Figure 4 on the first `evaluate.figures` val images.

Columns: image, CAM and reliable regions (models/cls.pt, as evaluate_cam), one-step (models/onestep.pt,
`evaluate` settings), two-step (models/deeplab.pt, `evaluate_deeplab` settings), ground truth.
"""

from __future__ import annotations

from rrm.engine.crf_pool import CRFPool
from rrm.engine.qualitative import Inference, first_ids, qualitative_grid
from rrm.experiments.pipeline import crf_params, dataset, device, load_model, mining_params
from rrm.experiments.settings import load_params

OUT = "reports/figures/qualitative.png"


def inference(section: dict) -> Inference:
    return Inference(scales=section["scales"], flip=section["flip"], crf=crf_params(section["crf"]))


def main() -> None:
    params = load_params()
    dev = device(params)
    val = dataset(params, "val_split")
    # CRFs inline: for a handful of images, starting worker processes (each imports torch) costs more than
    # the CRFs themselves (8 embedded images: ~3 s inline, ~13 s with 2 workers).
    with CRFPool(0) as pool:
        titles = qualitative_grid(
            OUT, val, first_ids(val, params["evaluate"]["figures"]),
            classifier=load_model("models/cls.pt", dev), onestep=load_model("models/onestep.pt", dev),
            deeplab=load_model("models/deeplab.pt", dev), cam_scales=params["mining"]["cam_scales"],
            mining=mining_params(params), onestep_inference=inference(params["evaluate"]),
            deeplab_inference=inference(params["evaluate_deeplab"]), pool=pool, device=dev)
    print(f"{OUT}: {', '.join(titles)}")


if __name__ == "__main__":
    main()
