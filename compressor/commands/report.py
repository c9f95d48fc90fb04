"""`compress report RUN`: rebuild report.md and report.png from a run's report.json."""

from pathlib import Path
from typing import Annotated

import typer

from compressor.commands import friendly


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def report(run: Annotated[Path, typer.Argument(help="run folder (holds report.json)")]):
        """Re-render a run's report.md and report.png, and print its summary."""
        from compressor.report import render

        render(run, show=True)
