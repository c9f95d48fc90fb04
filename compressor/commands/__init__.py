"""CLI commands beyond the core ones in cli.py: each module here defines `register(app)`."""

import contextlib
import functools
import importlib
import json
import pkgutil
import sys
from typing import Annotated

import typer
from rich.text import Text
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # Typer bundles click, and exports neither

from compressor.console import console
from compressor.errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_USAGE, CompressorError, Problems, bounded


JsonOutput = Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout (messages go to stderr)")]
TrustCode = Annotated[bool, typer.Option("--trust-code", help="let a run folder's python: model source import and "
                                                             "run its code (only for folders you trust)")]


def trusted(trust_code: bool):
    from compressor.models import NO_TRUST, TRUST_ALL

    return TRUST_ALL if trust_code else NO_TRUST


def print_json(doc) -> None:
    typer.echo(json.dumps(doc, indent=1, default=str))


def friendly(fn):
    """User errors become one red line each and exit code 2, Ctrl-C exit code 130, never a
    traceback. With --json (a command's `as_json`) the command's messages go to stderr, and what
    it returns, or the error, is printed on stdout as JSON."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = kwargs.get("as_json", False)
        result, code = None, 0
        console.stderr = as_json  # with --json, stdout carries the JSON alone
        try:
            with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
                result = fn(*args, **kwargs)
        except CompressorError as e:
            lines = [bounded(line) for line in (e.lines if isinstance(e, Problems) else [str(e)])]
            for line in lines:
                console.print(Text.assemble(("error:", "red"), " ", line), soft_wrap=True)
            summary = lines[0] if len(lines) == 1 else f"{len(lines)} problems, the first: {lines[0]}"
            result, code = {"error": summary, "problems": lines}, EXIT_INPUT
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: finished passes are kept; with --resume the interrupted pass "
                          "continues from its last finished epoch", soft_wrap=True)
            result, code = {"error": "interrupted"}, EXIT_INTERRUPTED
        finally:
            console.stderr = False
        if as_json and result is not None:  # under torchrun only rank 0 has a summary
            print_json({**result, "exit_code": code} if code else result)
        if code:
            raise typer.Exit(code)
        return result

    return wrapper


@contextlib.contextmanager
def usage_errors(as_json: bool):
    """A mistake on the command line (an unknown option, a missing argument, a bad choice) as one
    line and exit code 64, apart from bad input (2), which the message then names."""
    try:
        yield
    except NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help())
        raise typer.Exit(EXIT_USAGE) from None
    except UsageError as e:
        message = e.format_message().rstrip(".") + (f" (see {e.ctx.command_path} --help)" if e.ctx else "")
        if as_json:
            print_json({"error": message, "exit_code": EXIT_USAGE})
        typer.secho("error:", fg="red", err=True, nl=False)
        typer.echo(f" {message}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


class Commands(typer.core.TyperGroup):
    """`compress` and its commands, with usage mistakes reported by `usage_errors`."""

    def make_context(self, info_name, args, parent=None, **extra):
        with usage_errors("--json" in args):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx):
        with usage_errors("--json" in ctx.args):
            return super().invoke(ctx)


def register_all(app: typer.Typer) -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}").register(app)
