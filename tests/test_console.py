"""The `rrm` console script: the typer app with the pipeline installed, one line naming the extra without."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rrm.console import main, missing_extra_message

REPO = Path(__file__).resolve().parents[1]


def test_runs_the_app_when_the_pipeline_is_installed(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["rrm", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert "check-data" in capsys.readouterr().out


def test_a_missing_third_party_module_is_one_line_naming_the_extra() -> None:
    """Run with typer made unimportable (a None entry in sys.modules), as in a light install."""
    code = "import sys; sys.modules['typer'] = None\nfrom rrm.console import main\nmain()"
    out = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "rrm: this command needs the 'pipeline' extra (module 'typer' is missing): pip install 'rrm[pipeline]'"]


def test_rrm_s_own_missing_modules_are_bugs_not_a_missing_extra() -> None:
    assert missing_extra_message(ModuleNotFoundError("no rrm.nothing", name="rrm.nothing")) is None
    assert missing_extra_message(ModuleNotFoundError("no name")) is None
    assert "'pandas'" in missing_extra_message(ModuleNotFoundError("x", name="pandas.core"))
