"""CLI commands beyond the core ones in cli.py: each module here defines `register(app)`."""

import functools
import importlib
import pkgutil
from typing import Annotated

import typer
from rich.text import Text

from compressor.console import console
from compressor.errors import CompressorError, bounded


TrustCode = Annotated[bool, typer.Option("--trust-code", help="let a run folder's python: model source import and "
                                                             "run its code (only for folders you trust)")]


def trusted(trust_code: bool):
    from compressor.models import NO_TRUST, TRUST_ALL

    return TRUST_ALL if trust_code else NO_TRUST


def friendly(fn):
    """User errors become one red line and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CompressorError as e:
            console.print(Text.assemble(("error:", "red"), " ", bounded(str(e))), soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: finished passes are kept; continue with --resume")
            raise typer.Exit(130) from None

    return wrapper


def register_all(app: typer.Typer) -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}").register(app)
