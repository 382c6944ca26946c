"""Stage export_pseudo: the one-step network labels the training split for the two-step DeepLab.

    python stages/export_pseudo.py --model models/onestep.pt --masks data/pseudo

Their quality against the split's masks is stage report_pseudo's (stages/report_pseudo.py).
"""

from __future__ import annotations

import argparse

from rrm.data.voc import voc_split
from rrm.engine.device import resolve_device
from rrm.engine.pseudo import export_pseudo
from rrm.method.crf_pool import CRFPool
from rrm.models.registry import load_model
from rrm.models.rrm_net import ARCHS
from rrm.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the one-step network (stage train_onestep)")
    parser.add_argument("--masks", required=True, help="folder the pseudo masks are written to")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    p = load_settings(args.params)
    s, dev = p.export_pseudo, resolve_device(p.device)
    model, *_ = load_model(args.model, ARCHS, dev, dataset=p.data.dataset)
    split = voc_split(p.data, s.split, weak=True)
    with CRFPool(p.mining.pool_processes) as pool:
        written = export_pseudo(model, split, args.masks, spec=split.spec, scales=s.scales,
                                flip=s.flip, crf=s.crf, pool=pool, device=dev)
    print(f"{args.masks}: {written} pseudo masks")


if __name__ == "__main__":
    main()
