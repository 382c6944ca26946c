"""Packaged settings files: the real-VOC profiles (profiles/<name>.yaml) and the paper's experiment table
(tables.yaml), read through importlib.resources so that they are found in any installation."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def config_file(*parts: str) -> Traversable:
    """A file shipped in this folder, e.g. config_file("profiles", "voc-code.yaml")."""
    return resources.files(__name__).joinpath(*parts)
