"""The `compress` command line."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from compressor.commands import Commands, JsonOutput, TrustCode, friendly, register_all
from compressor.console import console
from compressor.errors import CompressorError

app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
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
    as_json: JsonOutput = False,
):
    """Run a recipe: every pass, a checkpoint after each, then a summary (with --json: report.json's content)."""
    import json

    from compressor.pipeline import Pipeline
    from compressor.process import keep_freed_memory
    from compressor.recipe import load_recipe
    from compressor.report import REPORT_JSON, print_summary, write_report
    from compressor.training import distributed

    if resume and fresh:
        raise CompressorError("--resume and --fresh contradict each other; pick one")
    keep_freed_memory()
    parsed = load_recipe(recipe, set_ or [])
    if threads:
        parsed.threads = threads
    pipeline = Pipeline(parsed, out or Path("runs") / parsed.name, trust_code)
    state = pipeline.run(resume=resume, fresh=fresh)
    main = distributed.is_main()  # under torchrun, rank 0 alone writes and reports
    if main:
        write_report(pipeline.run_dir, parsed, state.records, {"threads": pipeline.threads, "wait": pipeline.waiting(),
                                                               "input_shape": list(state.input_shape)})
        print_summary(state.records, pipeline.run_dir)
    distributed.shutdown()
    if as_json and main:
        return {"run_dir": str(pipeline.run_dir), **json.loads((pipeline.run_dir / REPORT_JSON).read_text())}


@app.command()
@friendly
def validate(recipe: RecipeArg, set_: SetOpt = None, as_json: JsonOutput = False):
    """Check a recipe without running it: its keys, model sources, checkpoints, data files and the
    order of its passes; every problem at once (with --json: the resolved recipe)."""
    from compressor.recipe import load_recipe

    parsed = load_recipe(recipe, set_ or [])
    kinds = " → ".join(p.type for p in parsed.passes) or "no passes"
    console.print(f"[green]ok[/green] {recipe}: '{parsed.name}', model {parsed.model.source}, "
                  f"data {parsed.data.dataset}, {len(parsed.passes)} passes: {kinds}")
    return {"ok": True, "recipe": str(recipe), "resolved": parsed.model_dump(mode="json", by_alias=True)}


@app.command()
@friendly
def passes(name: Annotated[Optional[str], typer.Argument(help="show one pass only")] = None,
           markdown: Annotated[bool, typer.Option("--markdown", help="every recipe key as Markdown (docs/recipes.md)")]
           = False):
    """List every pass with its parameters, defaults and help."""
    from compressor.passes import PASSES
    from compressor.reference import COLUMNS, key_tables, recipe_markdown, summary

    if markdown:
        typer.echo(recipe_markdown(), nl=False)
        return
    for kind in [PASSES.get(name).name] if name else PASSES.names():
        cls = PASSES.get(kind)
        console.print(f"[bold]{kind}[/bold] — {summary(cls)}")
        for keys in key_tables(kind, cls.Params):
            table = Table(title=f"[bold]{keys.title}[/bold]", title_justify="left", show_edge=False)
            for column in COLUMNS:
                table.add_column(column, overflow="fold")  # a narrow terminal wraps a cell, never cuts it
            for row in keys.rows:
                table.add_row(*row)
            console.print(table)
        console.print()


register_all(app)


def main():
    from compressor.process import settle_wait

    settle_wait()  # before anything loads torch: libgomp reads how to wait once, as it loads
    app(prog_name="compress")


if __name__ == "__main__":
    sys.exit(main())
