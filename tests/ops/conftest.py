"""Fixtures of the ops tests: the C++ filter's reference values and the authors' loss transcription."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
# RRM_REFERENCE: where ../shared does not travel, as RRM_VOC_SAMPLE for the photos
REFERENCE = Path(os.environ.get("RRM_REFERENCE", REPO.parent / "shared" / "reference"))


def load_by_path(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference() -> tuple[dict, ModuleType]:
    """energy_lattice_ref.json and its recipe module (load_image, make_prob)."""
    data, recipe = REFERENCE / "energy_lattice_ref.json", REFERENCE / "energy_lattice_ref.py"
    if not (data.is_file() and recipe.is_file()):
        pytest.skip(f"{REFERENCE}: C++ reference values (energy_lattice_ref.json/.py) not present")
    return json.loads(data.read_text()), load_by_path(recipe, "energy_lattice_ref")


@pytest.fixture(scope="session")
def authors() -> ModuleType:
    return load_by_path(TESTS / "reference" / "authors_energy_loss.py", "authors_energy_loss")
