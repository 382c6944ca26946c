"""Stage pretrain_deeplab: the DeepLab that train_deeplab starts from.

deeplab.init (a torchvision ImageNet file, or null for random weights), then `pretrain_deeplab.steps` of
multi-label classification on the training split's image labels. On real VOC steps is 0: the published
recipe starts from ImageNet weights as they are. On the embedded data there is no ImageNet; classification
pre-training on the embedded images plays its part, as train_cls does for the one-step network.
"""

from __future__ import annotations

from rrm.config import load_params
from rrm.distributed import launch
from rrm.pipeline import train_settings
from rrm.train import train


def main() -> None:
    params = load_params()
    deeplab = params["deeplab"]
    settings = train_settings(params, "pretrain_deeplab", mode="cls", out_model="models/deeplab_init.pt",
                              arch=deeplab["arch"], init=deeplab["init"])
    if not launch(settings.nproc):  # nproc > 1: re-run this script under torchrun
        train(settings)


if __name__ == "__main__":
    main()
