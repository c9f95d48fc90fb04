"""The `compress` command line."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from compressor.commands import friendly, register_all
from compressor.console import console
from compressor.errors import CompressorError
from compressor.runtime.heap import keep_freed_memory

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make trained PyTorch models smaller and faster for edge GPUs — and prove it.")

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
):
    """Run a recipe: every pass, a checkpoint after each, then a summary."""
    from compressor.pipeline import Pipeline
    from compressor.recipe import load_recipe
    from compressor.report import print_summary, write_report
    from compressor.training import distributed

    if resume and fresh:
        raise CompressorError("--resume and --fresh contradict each other; pick one")
    parsed = load_recipe(recipe, set_ or [])
    pipeline = Pipeline(parsed, out or Path("runs") / parsed.name)
    state = pipeline.run(resume=resume, fresh=fresh)
    if distributed.is_main():  # under torchrun, rank 0 alone writes and reports
        write_report(pipeline.run_dir, parsed, state.records)
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

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args if a is not type(None)) + " (optional)" * (type(None) in args)
    if origin is not None:
        return f"{origin.__name__} of {type_name(args[-1])}" if args else origin.__name__
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


@app.command()
@friendly
def passes(name: Annotated[Optional[str], typer.Argument(help="show one pass only")] = None):
    """List every pass with its parameters, defaults and help."""
    from compressor.passes import PASSES

    for kind in [PASSES.get(name).name] if name else PASSES.names():
        cls = PASSES.get(kind)
        table = Table(title=f"[bold]{kind}[/bold] — {(cls.__doc__ or '').strip().splitlines()[0]}",
                      title_justify="left", show_edge=False)
        table.add_column("parameter")
        table.add_column("type")
        table.add_column("default")
        table.add_column("help")
        for field_name, field in cls.Params.model_fields.items():
            if field_name == "type":
                continue
            annotation = type_name(field.annotation)
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            table.add_row(field.alias or field_name, annotation, default,
                          field.description or "")
        console.print(table)
        console.print()


register_all(app)


def main():
    keep_freed_memory()
    app(prog_name="compress")


if __name__ == "__main__":
    sys.exit(main())
