"""`compress analyze RECIPE`: pruning sensitivity of every prunable unit of the recipe's model."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from compressor.commands import friendly
from compressor.console import console
from compressor.errors import CompressorError


def _ratios(text: str) -> list[float]:
    try:
        values = sorted({float(v) for v in text.split(",")})
    except ValueError:
        values = []
    if not values or not all(0 < v < 1 for v in values):
        raise CompressorError(f"--ratios '{text}' must be fractions between 0 and 1 joined by commas, e.g. 0.25,0.5")
    return values


def _table(rows: list[dict], ratios: list[float], base: float, label: str) -> tuple[Table, list[str]]:
    """The console table and the same as Markdown lines: one row per unit, drop / MACs saved per ratio."""
    heads = ["unit", "kind", *[f"pruned {q:g}" for q in ratios]]
    table = Table(title=f"{label} drop (points from {base:.2f}%) / share of the model's MACs saved, each unit "
                        "pruned alone", title_justify="left")
    for column in heads:
        table.add_column(column, justify="left" if column in ("unit", "kind") else "right")
    lines = ["| " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(ratios)]
    for unit in dict.fromkeys(r["unit"] for r in rows):
        mine = [r for r in rows if r["unit"] == unit]
        cells = [unit, mine[0]["kind"], *[f"{r['drop']:+.2f} / {r['macs_saved']:.1%}" for r in mine]]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    return table, lines


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def analyze(
        recipe: Annotated[Path, typer.Argument(help="recipe YAML: its model, data and first prune pass")],
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a key: data.eval_samples=2000")] = None,
        ratios: Annotated[str, typer.Option("--ratios", help="fractions each unit is pruned by")] = "0.25,0.5,0.75",
        max_drop: Annotated[float, typer.Option("--max-drop", help="points of the task's metric (top-1, "
                                                                         "mAP50-95) a suggested ratio may cost")] = 1.0,
        out: Annotated[Optional[Path], typer.Option("--out", help="folder for the results "
                                                                  "(default runs/<name>-sensitivity)")] = None,
    ):
        """Sensitivity: each prunable channel group and attention block pruned alone at a few ratios,
        with the accuracy drop and MACs saved; writes a table, a PNG heat map and a `ratios:`
        suggestion for the prune pass."""
        from compressor.files import atomic_write
        from compressor.passes.prune import PruneParams
        from compressor.pipeline import RunContext, resolve_device
        from compressor.pruning.graph import match_modules, survey
        from compressor.pruning.importance import NEEDS_GRADIENTS, accumulate_gradients
        from compressor.pruning.sensitivity import analyse, plot, ratios_yaml, suggest
        from compressor.recipe import load_recipe

        fractions = _ratios(ratios)
        parsed = load_recipe(recipe, set_ or [])
        folder = out or Path("runs") / f"{parsed.name}-sensitivity"
        ctx = RunContext(parsed, folder, resolve_device(parsed.device))
        p = next((q for q in parsed.passes if q.type == "prune"), None) or PruneParams()
        model = ctx.baseline().to(ctx.device)
        example = ctx.data.example_input().to(ctx.device)
        found = survey(model, example, match_modules(model, p.ignore, "ignore"))
        if p.importance in NEEDS_GRADIENTS:
            accumulate_gradients(model, ctx.data.train, ctx.device, p.taylor_batches, ctx.task)
        plan = p.unit_plan(model)
        console.print(f"{len(found.prunable)} channel groups and {len(found.heads)} attention blocks, "
                      f"each pruned at {', '.join(map(str, fractions))} and evaluated on "
                      f"{ctx.data.eval.num_samples} images")
        base, rows = analyse(model, example, plan, found, fractions,
                             lambda m: ctx.task.evaluate(m, ctx.data.eval, ctx.device)[ctx.task.metric])
        metric, label = ctx.task.metric, ctx.task.metric_label
        table, lines = _table(rows, fractions, base, label)
        console.print(table)
        suggestion = suggest(rows, max_drop)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "sensitivity.json", json.dumps(
            {"recipe": parsed.name, "metric": metric, "baseline": base, "ratios": fractions, "rows": rows,
             "suggestion": suggestion, "max_drop": max_drop}, indent=1))
        atomic_write(folder / "sensitivity.md", "\n".join(
            [f"# {parsed.name}: pruning sensitivity", "", f"Baseline {label} {base:.2f}%. Each cell: {label} drop "
             "in points / share of the model's MACs saved, with only that unit pruned.", "", *lines, ""]))
        plot(rows, fractions, folder / "sensitivity.png", label)
        atomic_write(folder / "ratios.yaml", ratios_yaml(suggestion, max_drop, label))
        console.print(f"  suggested for the prune pass ({folder / 'ratios.yaml'}):")
        console.print((folder / "ratios.yaml").read_text().split("\n", 2)[2], highlight=False, markup=False)
        console.print(f"  written: {folder}/sensitivity.json, .md, .png, ratios.yaml")
