"""`pip install <repo>` without extras: an environment holding torch and numpy only gets rrm.ops and
nothing else, and rrm.ops works there (import, DenseEnergyLoss forward + backward, torch dense_crf).

The fresh environment is a venv without system site-packages whose site-packages holds links to
exactly the distributions of torch's and numpy's requirement closure (as installed in this venv; torch
needs setuptools, so the offline ``--no-build-isolation`` build has it). pip installs the repository
there with ``--no-index`` and *with* dependency resolution: a requirement outside that closure fails the
install. Afterwards the environment must hold the closure plus rrm and nothing else.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CORE = ("torch", "numpy")
PIPELINE_MODULES = ("dvc", "dvclive", "pandas", "matplotlib", "typer", "pydensecrf", "yaml", "ruamel", "PIL",
                    "torchvision", "tqdm")


def _closure(roots: tuple[str, ...]) -> dict[str, metadata.Distribution]:
    """Installed distributions that ``roots`` need (markers evaluated here, no extras), by canonical name."""
    env = default_environment()
    found: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        dist = metadata.distribution(name)
        found[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(req.name)
                if req.extras:  # e.g. cuda-toolkit[cublas, ...]: the extras' own requirements
                    extra_dist = metadata.distribution(req.name)
                    for extra_line in extra_dist.requires or []:
                        extra_req = Requirement(extra_line)
                        if extra_req.marker is not None and any(
                                extra_req.marker.evaluate({**env, "extra": e}) for e in req.extras):
                            todo.append(extra_req.name)
    return found


def _top_level_entries(dists: dict[str, metadata.Distribution]) -> set[Path]:
    """Files and folders directly in site-packages that these distributions own (their .dist-info included),
    wherever each distribution is installed."""
    entries: set[Path] = set()
    for dist in dists.values():
        for file in dist.files or []:
            parts = Path(file).parts
            if parts and parts[0] != "..":
                entry = Path(dist.locate_file(parts[0]))
                if entry.exists():
                    entries.add(entry)
    return entries


def _light_env(tmp_path: Path) -> Path:
    """A venv whose site-packages links exactly the torch + numpy closure; returns its python."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    for entry in _top_level_entries(_closure(CORE)):
        (site / entry.name).symlink_to(entry)
    return python


def _distributions(python: Path) -> set[str]:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps(sorted({m.metadata['Name'].lower().replace('_', '-') for m in m.distributions()})))")
    # -I: no cwd on sys.path, so a checkout's rrm.egg-info (from the editable install) is not counted
    out = subprocess.run([str(python), "-I", "-c", code], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout))


def _source_copy(tmp_path: Path) -> Path:
    """What pip needs to build the package (building in-tree writes build/ and *.egg-info)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "rrm", src / "rrm", ignore=shutil.ignore_patterns("__pycache__"))
    return src


USE = f"""
import sys
import torch
import rrm, rrm.ops
from rrm.ops import DenseEnergyLoss, bilateral_filter, dense_crf
assert rrm.__file__.startswith(sys.prefix), rrm.__file__  # the installed copy, not the checkout
gen = torch.Generator().manual_seed(0)
images = torch.rand(2, 3, 20, 24, generator=gen) * 255
probs = torch.rand(2, 4, 20, 24, generator=gen).softmax(1).requires_grad_()
loss = DenseEnergyLoss(1e-3, 15.0, 10.0, 0.5)(images, probs, torch.ones(2, 20, 24), torch.full((2, 1, 20, 24), 255))
loss.sum().backward()
assert loss.shape == (1,) and loss.item() < 0 and probs.grad.abs().sum() > 0
assert dense_crf(images, probs.detach(), iterations=2).shape == probs.shape
try:
    dense_crf(images, probs.detach(), backend="pydensecrf")
except ModuleNotFoundError as error:
    print("pydensecrf:", error)
present = sorted(m for m in {PIPELINE_MODULES!r} if m in sys.modules)
print("pipeline modules loaded:", present)
"""


@pytest.mark.slow
def test_install_without_extras_adds_only_rrm_and_ops_work(tmp_path: Path) -> None:
    python = _light_env(tmp_path)
    before = _distributions(python)
    assert {"torch", "numpy"} <= before and not before & {"dvc", "typer", "pandas", "pydensecrf2"}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", str(_source_copy(tmp_path))],
        capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert install.returncode == 0, install.stdout + install.stderr
    assert _distributions(python) - before == {"rrm"}

    requires = metadata.PathDistribution(
        next((tmp_path / "env").glob("lib/python*/site-packages/rrm-*.dist-info"))).requires or []
    core = {canonicalize_name(Requirement(r).name) for r in requires if "extra ==" not in r}
    assert core == {"torch", "numpy"}, requires

    used = subprocess.run([str(python), "-c", USE], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert used.returncode == 0, used.stderr
    lines = used.stdout.splitlines()
    assert lines[-1] == "pipeline modules loaded: []"
    assert "pip install 'rrm[pipeline]'" in lines[0]  # the pydensecrf backend names the extra

    cli = subprocess.run([str(tmp_path / "env" / "bin" / "rrm"), "--help"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert cli.returncode == 1 and cli.stdout == ""
    assert cli.stderr.strip().splitlines() == [
        "rrm: this command needs the 'pipeline' extra (module 'typer' is missing): pip install 'rrm[pipeline]'"]
