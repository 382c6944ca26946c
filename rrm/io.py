"""Atomic file writes and palette-PNG masks: every output is written to a temp file, then renamed."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path` (same filesystem)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{path.parent}: cannot create output directory ({error.strerror})") from error
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"{path.parent}: output directory is not writable")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the permissions a plain open() gives
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(fileobj)` on a temp file and rename it onto `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """torch.save through a temp file, so a kill never leaves a half-written checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path: str | os.PathLike) -> Any:
    """Load a checkpoint or weight file safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight/checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: cannot load as a weights-only PyTorch file ({error})") from error


def save_mask(path: str | os.PathLike, mask: np.ndarray, palette: np.ndarray) -> None:
    """Write a (H, W) uint8 label map as a palette PNG with the dataset's (256, 3) `palette`
    (rrm.data.datasets; index 255 keeps its palette colour)."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(palette, dtype=np.uint8).flatten().tolist())
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a palette (or grey) PNG label map as (H, W) uint8 indices, never converting colours."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(f"{path}: mask must be a palette or 8-bit grey PNG, got mode {image.mode}")
            return np.array(image, dtype=np.uint8)
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: unreadable mask ({error})") from error


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB; grey, CMYK and RGBA are converted, corrupt files raise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            image.load()  # forces a full decode, so truncated JPEGs fail here
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: unreadable or truncated image ({error})") from error
