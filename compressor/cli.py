"""The `compress` command line."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from compressor.commands import TrustCode, friendly, register_all
from compressor.console import console
from compressor.errors import CompressorError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make trained PyTorch models smaller and faster for edge GPUs — and prove it.")

def _version(show: bool) -> None:
    if show:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("compressor")
        except PackageNotFoundError:  # run from a source tree that was not installed
            from compressor import __version__ as number
        console.print(f"compress {number}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                        help="print the version and exit")] = False):
    """Make trained PyTorch models smaller and faster for edge GPUs — and prove it."""


RecipeArg = Annotated[Path, typer.Argument(help="recipe YAML file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a key: passes.2.ratio=0.6")]


@app.command()
@friendly
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="run folder (default runs/<name>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue after the last finished pass")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="delete an existing run folder first")] = False,
    trust_code: TrustCode = False,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for the run (default: the "
                                                    "recipe's threads, else OMP_NUM_THREADS, else the usable CPUs)")] = None,
):
    """Run a recipe: every pass, a checkpoint after each, then a summary."""
    from compressor.pipeline import Pipeline
    from compressor.process import keep_freed_memory
    from compressor.recipe import load_recipe
    from compressor.report import print_summary, write_report
    from compressor.training import distributed

    if resume and fresh:
        raise CompressorError("--resume and --fresh contradict each other; pick one")
    keep_freed_memory()
    parsed = load_recipe(recipe, set_ or [])
    if threads:
        parsed.threads = threads
    pipeline = Pipeline(parsed, out or Path("runs") / parsed.name, trust_code)
    state = pipeline.run(resume=resume, fresh=fresh)
    if distributed.is_main():  # under torchrun, rank 0 alone writes and reports
        write_report(pipeline.run_dir, parsed, state.records, {"threads": pipeline.threads,
                                                               "input_shape": list(state.input_shape)})
        print_summary(state.records, pipeline.run_dir)
    distributed.shutdown()


@app.command()
@friendly
def validate(recipe: RecipeArg, set_: SetOpt = None):
    """Check a recipe without running it."""
    from compressor.recipe import load_recipe

    parsed = load_recipe(recipe, set_ or [])
    kinds = " → ".join(p.type for p in parsed.passes) or "no passes"
    console.print(f"[green]ok[/green] {recipe}: '{parsed.name}', model {parsed.model.source}, "
                  f"data {parsed.data.dataset}, {len(parsed.passes)} passes: {kinds}")


def type_name(annotation) -> str:
    """A reader's name for a parameter type: choices spelt out, nested models as 'mapping'."""
    import types
    import typing

    from pydantic import BaseModel

    from compressor.schema import members, unwrap

    annotation, tagger = unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if tagger is not None or members(annotation) and all(a is type(None) or members(a) for a in args):
        return "mapping"
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None)) + " (optional)" * (type(None) in args)
    if origin is not None:
        return f"{origin.__name__} of {type_name(args[-1])}" if args else origin.__name__
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def parameter_tables(title: str, annotation) -> list[Table]:
    """One table of keys per parameter model: a tagged union gives one per variant, and a
    nested mapping (a prune target, its fine-tuning) gets tables of its own after its owner's."""
    from compressor.schema import field_annotation, members, unwrap

    _, tagger = unwrap(annotation)
    variants = ({cls: [t for t, m in tagger.variants.items() if cls in members(m)] for cls in members(annotation)}
                if tagger else {cls: [] for cls in members(annotation)})
    tables, nested = [], []
    for cls, tags in variants.items():
        label = f"{title} ({tagger.describe(tags)})" if tags else title
        table = Table(title=f"[bold]{label}[/bold]", title_justify="left", show_edge=False)
        for column in ("parameter", "type", "default", "help"):
            table.add_column(column)
        for name, field in cls.model_fields.items():
            if name == "type" or (tagger and name == tagger.key):
                continue
            inner = field_annotation(cls, name)
            default = ("required" if field.is_required() else "see below" if members(inner) and field.default is None
                       and field.default_factory else repr(field.get_default(call_default_factory=True)))
            table.add_row(field.alias or name, type_name(field.annotation), default, field.description or "")
            if members(inner):
                nested.append((f"{title}.{field.alias or name}", inner))
        tables.append(table)
    for sub_title, sub in dict.fromkeys(nested):
        tables += parameter_tables(sub_title, sub)
    return tables


@app.command()
@friendly
def passes(name: Annotated[Optional[str], typer.Argument(help="show one pass only")] = None):
    """List every pass with its parameters, defaults and help."""
    from compressor.passes import PASSES

    for kind in [PASSES.get(name).name] if name else PASSES.names():
        cls = PASSES.get(kind)
        console.print(f"[bold]{kind}[/bold] — {(cls.__doc__ or '').strip().splitlines()[0]}")
        for table in parameter_tables(kind, cls.Params):
            console.print(table)
        console.print()


register_all(app)


def main():
    app(prog_name="compress")


if __name__ == "__main__":
    sys.exit(main())
