"""`compress analyze RECIPE`: pruning sensitivity of every prunable unit of the recipe's model."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from compressor.commands import JsonOutput, friendly
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


def _cell(row: dict) -> str:
    """Drop / MACs saved; a ratio that gave the same model as another was not evaluated again."""
    if row["same_as"] == 0:
        return "no cut"
    return f"{row['drop']:+.2f} / {row['macs_saved']:.1%}" + (f" (as {row['same_as']:g})" if row["same_as"] else "")


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
        cells = [unit, mine[0]["kind"], *[_cell(r) for r in mine]]
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
        samples: Annotated[int, typer.Option("--samples", min=1, help="evaluate on the first N evaluation "
                                             "images (fewer where the recipe's data has fewer)")] = 2000,
        out: Annotated[Optional[Path], typer.Option("--out", help="folder for the results "
                                                                  "(default runs/<name>-sensitivity)")] = None,
        as_json: JsonOutput = False,
    ):
        """Sensitivity: each prunable channel group and attention block pruned alone at a few ratios,
        with the accuracy drop and MACs saved; writes a table, a PNG heat map and a `ratios:`
        suggestion for the prune pass. sensitivity.json grows after each unit, so an interrupted
        analysis keeps what it measured."""
        return _analyze(recipe, set_ or [], _ratios(ratios), max_drop, samples, out)


def _analyze(recipe: Path, overrides: list[str], fractions: list[float], max_drop: float, samples: int,
             out: Path | None) -> dict:
    from compressor.files import atomic_write
    from compressor.passes.prune import PruneParams
    from compressor.pipeline import RunContext, resolve_device
    from compressor.pruning.graph import match_modules, survey
    from compressor.pruning.importance import NEEDS_GRADIENTS, accumulate_gradients
    from compressor.pruning.sensitivity import analyse, plot, ratios_yaml, suggest
    from compressor.recipe import load_recipe

    parsed = load_recipe(recipe, overrides)
    # Every unit at every ratio is one evaluation: a subset keeps the whole affordable.
    parsed.data.eval_samples = min(samples, parsed.data.eval_samples or samples)
    folder = out or Path("runs") / f"{parsed.name}-sensitivity"
    ctx = RunContext(parsed, folder, resolve_device(parsed.device))
    p = next((q for q in parsed.passes if q.type == "prune"), None) or PruneParams()
    model = ctx.baseline().to(ctx.device)
    example = ctx.data.example_input().to(ctx.device)
    found = survey(model, example, match_modules(model, p.ignore, "ignore"))
    if p.importance in NEEDS_GRADIENTS:
        accumulate_gradients(model, ctx.data.train, ctx.device, p.taylor_batches, ctx.task)
    plan = p.unit_plan(model)
    # A sensitivity is a choice (which ratios to cut): it is measured on the validation split.
    split = ctx.data.decision_split()
    split_name = "validation" if split is ctx.data.val else "test"
    evaluated_on = split.num_samples
    console.print(f"{len(found.prunable)} channel groups and {len(found.heads)} attention blocks, "
                  f"each pruned at {', '.join(map(str, fractions))} and evaluated on the first {evaluated_on} "
                  f"{split_name} images (--samples to change)")
    metric, label = ctx.task.metric, ctx.task.metric_label
    folder.mkdir(parents=True, exist_ok=True)

    def results(base: float, rows: list[dict], complete: bool) -> dict:
        return {"recipe": parsed.name, "metric": metric, "split": split_name, "samples": evaluated_on, "baseline": base,
                "ratios": fractions, "complete": complete, "rows": rows,
                **({"suggestion": suggest(rows, max_drop), "max_drop": max_drop} if complete else {})}

    def keep(base: float, rows: list[dict]) -> None:
        atomic_write(folder / "sensitivity.json", json.dumps(results(base, rows, complete=False), indent=1))

    base, rows = analyse(model, example, plan, found, fractions,
                         lambda m: ctx.task.evaluate(m, split, ctx.device)[metric], keep)
    table, lines = _table(rows, fractions, base, label)
    console.print(table)
    doc = results(base, rows, complete=True)
    atomic_write(folder / "sensitivity.json", json.dumps(doc, indent=1))
    atomic_write(folder / "sensitivity.md", "\n".join(
        [f"# {parsed.name}: pruning sensitivity", "", f"Baseline {label} {base:.2f}% on the first {evaluated_on} "
         f"{split_name} images. Each cell: {label} drop in points / share of the model's MACs saved, with only that "
         "unit pruned; '(as R)': the same model as at ratio R, not evaluated again; 'no cut': the ratio removed "
         "nothing.", "", *lines, ""]))
    plot(rows, fractions, folder / "sensitivity.png", label)
    atomic_write(folder / "ratios.yaml", ratios_yaml(doc["suggestion"], max_drop, label))
    console.print(f"  suggested for the prune pass ({folder / 'ratios.yaml'}):")
    console.print((folder / "ratios.yaml").read_text().split("\n", 2)[2], highlight=False, markup=False)
    console.print(f"  written: {folder}/sensitivity.json, .md, .png, ratios.yaml")
    return doc
