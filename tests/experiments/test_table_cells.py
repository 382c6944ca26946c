"""Every planned cell of Tables 1-5 under each real-VOC profile means what the paper's cell means: it
resolves to valid parameters, picks its network's published test CRF, and each of its training stages
loads the weight file of its own architecture and runs a step.

The weight files are stand-ins at 1/16 width with the keys of the real ones (PSA's res38_cls.pth,
torchvision's VGG-16 and ResNet-101; PSA's ImageNet ResNet-38 as an MXNet file in the layout and key names of
the one real MXNet wrote, ../shared/reference), written where the profiles name them; the data
is the tiny generated VOC tree. Cells that differ only in alpha_ratio share one run per stage: the ratio
only moves the mining threshold (tested in tests/method).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from mxnet_files import ndarray_file, psa_name, record
from training import ARCHS, run_train

from rrm.data.voc import resolve_mask_dir
from rrm.engine.train import build_model
from rrm.experiments.profiles import expand, load_profile
from rrm.experiments.tables import load_table, plan
from rrm.experiments.training import training_run
from rrm.io import save_torch
from rrm.models.deeplab import build_deeplab
from rrm.models.mxnet_params import read_ndarray_list
from rrm.models.rrm_net import build_rrm
from rrm.settings import CRFParams, load_params, parse, read_yaml

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
WIDTH = 0.0625
# DeepLab's published test-time CRFs (the LargeFOV and v2 ResNet-101 prototxts: pos_w / pos_xy_std,
# bi_w / bi_xy_std / bi_rgb_std), written down here rather than read from the profile.
PUBLISHED_CRF = {
    "vgg16_largefov": CRFParams(iterations=10, gauss_sxy=3.0, gauss_compat=3.0, bi_sxy=121.0, bi_srgb=5.0,
                                bi_compat=4.0),
    "resnet101_v2": CRFParams(iterations=10, gauss_sxy=1.0, gauss_compat=3.0, bi_sxy=67.0, bi_srgb=3.0,
                              bi_compat=4.0),
}
IMAGENET = "weights/ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
WEIGHTS = {"vgg16_largefov": "weights/vgg16-397923af.pth", "resnet101_v2": "weights/resnet101-63fe2227.pth"}
# A tensor of each stand-in the network must hold once built: (file, model key, file key).
PROBES = {"resnet38": ("conv1a.weight", "conv1a.weight"), "vgg16_largefov": ("features.0.weight", "features.0.weight"),
          "resnet101_v2": ("backbone.conv1.weight", "conv1.weight")}


def _stand_ins(root: Path, mxnet_oracle: tuple[Path, dict] | None) -> dict[str, dict[str, torch.Tensor]]:
    """The weight files the profiles name, at WIDTH, under root/weights (PSA's ImageNet `.params` where
    mxnet_oracle is given); returns their contents."""
    torch.manual_seed(0)
    rrm = build_rrm(width=WIDTH).state_dict()
    vgg = build_deeplab(arch="vgg16_largefov", width=WIDTH).state_dict()
    resnet = build_deeplab(arch="resnet101_v2", width=WIDTH).state_dict()
    files = {
        "weights/res38_cls.pth": {k: v for k, v in rrm.items() if not k.startswith("fc8_seg")},  # PSA's classifier
        WEIGHTS["vgg16_largefov"]: {**{k: v for k, v in vgg.items() if k.startswith("features.")},
                                    "classifier.6.weight": torch.randn(1000, 8), "classifier.6.bias": torch.zeros(1000)},
        WEIGHTS["resnet101_v2"]: {**{k.removeprefix("backbone."): v for k, v in resnet.items()
                                     if k.startswith("backbone.")},
                                  "fc.weight": torch.randn(1000, 128), "fc.bias": torch.zeros(1000)},
    }
    for name, state in files.items():
        save_torch(root / name, state)
    if mxnet_oracle is None:
        return files
    # PSA's ImageNet ResNet-38 as users download it: an MXNet file with the keys and layout of the one real
    # MXNet wrote (its random values would overflow a forward pass), holding the stand-in's trained-like values
    names, arrays = read_ndarray_list(mxnet_oracle[0])
    values = [rrm[psa_name(name)].numpy() if psa_name(name) else array for name, array in zip(names, arrays, strict=True)]
    (root / IMAGENET).write_bytes(ndarray_file([record(v, "v2") for v in values], names))
    files[IMAGENET] = {psa_name(name): torch.from_numpy(v) for name, v in zip(names, values, strict=True) if psa_name(name)}
    return files


def _small(root: Path, profile: dict) -> dict:
    """What shrinks a real profile to the tiny tree, CPU and one step (nothing a cell's overrides touch);
    train_cls keeps steps 0 where the profile loads a ready classifier."""
    small = {"device": "cpu", "data.root": str(root), "data.mask_dir": None, "data.num_workers": 0,
             "model.width": WIDTH, "deeplab.width": WIDTH, "mining.pool_processes": 0,
             "train_cls.resize_long": [48, 64], "figures.examples": 0}
    for stage in ("train_cls", "train_onestep", "train_full", "train_deeplab"):
        small |= {f"{stage}.crop_size": 48, f"{stage}.batch_size": 2, f"{stage}.checkpoint_every": 1,
                  f"{stage}.steps": 1}
    if profile["train_cls.steps"] == 0:
        small["train_cls.steps"] = 0
    return small


def _overrides(cell: list[str]) -> dict:
    return {key: read_yaml(value) for key, value in (item.split("=", 1) for item in cell)}


def _probe(model: torch.nn.Module, arch: str, state: dict[str, torch.Tensor]) -> bool:
    own, theirs = PROBES[arch]
    return torch.equal(model.state_dict()[own], state[theirs])


@pytest.mark.parametrize("profile", ["voc-code", "voc-paper", "voc-code-imagenet"])
def test_every_cell_loads_its_weights_and_trains(profile: str, tiny_dataset: Path, tmp_path: Path,
                                                 request: pytest.FixtureRequest, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the profiles' relative weight paths
    files = _stand_ins(tmp_path, request.getfixturevalue("mxnet_resnet38") if profile == "voc-code-imagenet" else None)
    overrides = load_profile(profile)
    base = expand(load_params(PARAMS), {**overrides, **_small(tiny_dataset, overrides)}, source=profile)
    the_plan = plan(load_table(), base)
    masks = str(resolve_mask_dir(tiny_dataset))
    ran: dict[str, Path] = {}  # a run's settings (paths and alpha_ratio aside) -> its model
    archs = set()
    for n, exp in enumerate(the_plan.experiments_for()):
        p = parse(expand(base, _overrides(the_plan.overrides[exp]), source=f"{profile} {exp}"))
        stages = ["train_cls", "train_onestep"]
        if "evaluate_deeplab" in the_plan.targets[exp]:
            stages.append("train_deeplab")
            archs.add(p.deeplab.arch)
            assert p.evaluate_deeplab.crf == PUBLISHED_CRF[p.deeplab.arch], exp
            assert p.deeplab.init == WEIGHTS[p.deeplab.arch], exp
        cls_model = None
        for stage in stages:
            out = tmp_path / "runs" / f"{n}-{stage}"
            run = training_run(p, stage, out_model=str(out / "model.pt"), checkpoint=str(out / "last.pt"),
                               live_dir=None, init=str(cls_model) if stage == "train_onestep" else None,
                               masks=masks if stage == "train_deeplab" else None)
            if stage in ("train_cls", "train_deeplab"):  # the stages that start from a file of the profile
                model = build_model(run, ARCHS[run.arch], torch.device("cpu"))
                assert _probe(model, run.arch, files[run.init]), f"{exp} {stage}: {run.init} not loaded"
            key = repr(dataclasses.replace(run, out_model="", checkpoint="", init=None if stage == "train_onestep"
                                           else run.init, mining=run.mining and dataclasses.replace(
                                               run.mining, params=dataclasses.replace(run.mining.params,
                                                                                      alpha_ratio=1.0))))
            if key not in ran:
                history = run_train(run)
                assert all(torch.isfinite(torch.tensor(v)) for v in history.values()), (exp, stage, history)
                assert Path(run.out_model).is_file()
                ran[key] = Path(run.out_model)
            cls_model = ran[key] if stage == "train_cls" else cls_model
    assert archs == set(PUBLISHED_CRF)  # Table 5's two two-step rows are among the cells
