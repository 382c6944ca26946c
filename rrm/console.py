"""The `rrm` console script: the pipeline's command line when the `pipeline` extra is installed, one line
naming the extra when it is not (`pip install rrm` alone gives `rrm.ops` and nothing that needs typer)."""

from __future__ import annotations

import sys

EXTRA = "pipeline"


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """The one line for a package of the extra that is not installed; None when the missing module is
    rrm's own or the name is unknown (a real bug, not a missing extra)."""
    name = (error.name or "").split(".")[0]
    if not name or name == "rrm":
        return None
    return (f"rrm: this command needs the {EXTRA!r} extra (module {name!r} is missing): "
            f"pip install 'rrm[{EXTRA}]'")


def main() -> None:
    """Run the typer app; a ModuleNotFoundError of a third-party package becomes one line and exit code 1."""
    try:
        from rrm.cli import app

        app()
    except ModuleNotFoundError as error:
        message = missing_extra_message(error)
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(1)
