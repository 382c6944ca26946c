"""The CRF worker pool against sequential dense_crf calls; worker start-up without the main script."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from authors_settings import CRF
from PIL import Image

from rrm.io import load_image
from rrm.method.crf import dense_crf
from rrm.method.crf_pool import CRFPool


def _photo(voc: Path, name: str, width: int) -> np.ndarray:
    image = load_image(voc / "JPEGImages" / f"{name}.jpg")
    return np.array(Image.fromarray(image).resize((width, round(image.shape[0] * width / image.shape[1]))))


def test_pool_matches_sequential_and_keeps_order(voc_sample: Path) -> None:
    rng = np.random.default_rng(1)
    images, probs = [], []
    for k, name in enumerate(["2007_000063", "2007_000068", "2007_000364", "2007_000392"]):
        image = _photo(voc_sample, name, width=60 + 10 * k)
        images.append(image)
        probs.append(rng.random((2 + k, *image.shape[:2]), dtype=np.float32))  # sizes differ: order shows
    params = [CRF, replace(CRF, iterations=5), replace(CRF, bi_srgb=5.0), CRF]
    expected = [dense_crf(i, p, q) for i, p, q in zip(images, probs, params, strict=True)]
    with CRFPool(2) as pool:
        got = pool.map_async(images, probs, params).get()
        pending = pool.map_async(images[::-1], probs[::-1], CRF)
        again = pending.get()
        with pytest.raises(ValueError, match="pair up"):
            pool.map_async(images, probs[:2], CRF)
    with pytest.raises(RuntimeError, match="closed"):
        pool.map_async(images, probs, params)
    for e, g in zip(expected, got, strict=True):
        assert np.array_equal(e, g)
    assert np.array_equal(again[0], dense_crf(images[3], probs[3], CRF))
    inline = CRFPool(processes=0)
    sequential = inline.map_async(images, probs, params).get()
    assert all(np.array_equal(e, g) for e, g in zip(expected, sequential, strict=True))


def _power(base: float, exponent: int) -> float:
    return base**exponent


def test_submit_runs_functions_inline_and_in_workers() -> None:
    inline = CRFPool(0)
    assert inline.workers == 1 and inline.submit(_power, 2.0, 10).get() == 1024.0
    with CRFPool(2) as pool:
        assert pool.workers == 2
        handles = [pool.submit(_power, 3.0, k) for k in range(5)]
        assert [h.get() for h in handles] == [3.0**k for k in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(_power, 1.0, 1)


def test_workers_start_without_the_main_script(tmp_path: Path) -> None:
    """A stage script imports torch at the top; its CRF workers must not (spawn would re-run the script)."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import sys\nimport torch  # noqa: F401\nfrom rrm.method.crf_pool import CRFPool\nimport crf_probe\n\n"
        "def in_main():\n    return 1\n\n"
        "if __name__ == '__main__':\n"
        "    with CRFPool(2) as pool:\n"
        "        print(sorted({m for h in [pool.submit(crf_probe.heavy) for _ in range(4)] for m in h.get()}))\n"
        "        try:\n            pool.submit(in_main)\n        except ValueError as error:\n"
        "            print('refused:', error)\n")
    (tmp_path / "crf_probe.py").write_text(
        "import sys\n\ndef heavy():\n    return [m for m in ('torch', 'torchvision') if m in sys.modules]\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[]"  # no worker imported torch
    assert lines[1].startswith("refused: CRFPool.submit: in_main is defined in the main script")
