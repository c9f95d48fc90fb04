"""Sensitivity analysis: each prunable unit (a channel group, or the heads of an attention
block) is pruned alone at a few ratios and the model evaluated, so the user sees which layers
can lose much and which little. The suggestion it derives is a prune pass's `ratios:`."""

import io
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import yaml

from compressor.console import console, progress
from compressor.files import atomic_write
from compressor.measure import count_macs_params
from compressor.pruning.engine import Plan
from compressor.pruning.graph import Survey
from compressor.pruning.targets import prune_copy


def units(found: Survey) -> list[tuple[str, str]]:
    """(module name, kind) of everything analysed: channel groups by their root layer, then heads."""
    return [(g.root, "channels") for g in found.prunable] + [(name, "heads") for name in found.heads]


def analyse(model: nn.Module, example: torch.Tensor, plan: Plan, found: Survey, ratios: list[float],
            score: Callable[[nn.Module], float],
            measured: Callable[[float, list[dict]], None] = lambda base, rows: None) -> tuple[float, list[dict]]:
    """Baseline score and one row per (unit, ratio): score after pruning that unit alone, the drop,
    and the fraction of the model's MACs that pruning removed. A ratio that gives the same model as
    a smaller one (or as the unpruned model: ratio 0) is not evaluated again; its row says so in
    `same_as`. `measured(base, rows)` hears of each unit's rows as soon as they are in."""
    macs = count_macs_params(model, example)[0]
    work = units(found)
    rows = []
    with progress() as bar:
        task = bar.add_task("sensitivity", total=1 + len(work) * len(ratios), info="unpruned model")
        base = score(model)
        bar.advance(task)
        for index, (name, kind) in enumerate(work, 1):
            bar.update(task, info=f"{index}/{len(work)} {name}")
            seen = {macs: 0.0}  # MACs left -> the first ratio that left them: round_to can make ratios alike
            scores = {0.0: base}
            for ratio in ratios:
                # Ratio 0 everywhere except this unit; heads only when the unit is an attention block.
                single = replace(plan, global_=False, ratios={name: ratio}, heads=kind == "heads")
                trial = prune_copy(model, example, single, 0.0, found)
                same_as = seen.setdefault(trial.macs, ratio)
                if same_as == ratio:
                    scores[ratio] = score(trial.model)
                rows.append({"unit": name, "kind": kind, "ratio": ratio, "score": scores[same_as],
                             "drop": base - scores[same_as], "macs_saved": 1 - trial.macs / macs,
                             "same_as": None if same_as == ratio else same_as})
                bar.advance(task)
            console.print(f"  {index}/{len(work)} {name} ({kind}): " + ", ".join(
                f"{r['ratio']:g} → {_score_text(r)}" for r in rows[-len(ratios):]))
            measured(base, rows)
    return base, rows


def _score_text(row: dict) -> str:
    if row["same_as"] is None:
        return f"{row['score']:.2f}"
    return "no cut" if row["same_as"] == 0 else f"as {row['same_as']:g}"


def suggest(rows: list[dict], max_drop: float) -> dict:
    """Per unit, the largest ratio whose drop stays within `max_drop`: a prune pass's `ratios:`
    (and `ignore:` for units that tolerate none of the ratios tried)."""
    best: dict[str, float] = {}
    for row in rows:
        best.setdefault(row["unit"], 0.0)
        if row["drop"] <= max_drop:
            best[row["unit"]] = max(best[row["unit"]], row["ratio"])
    return {"ignore": sorted(u for u, r in best.items() if r == 0),
            "ratios": {u: r for u, r in best.items() if r > 0}}


def plot(rows: list[dict], ratios: list[float], path: Path, metric: str) -> None:
    """A heat map: one row per unit, one column per ratio, coloured by the score drop."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    names = list(dict.fromkeys(r["unit"] for r in rows))
    cell = {(r["unit"], r["ratio"]): r for r in rows}
    drop = torch.tensor([[cell[n, q]["drop"] for q in ratios] for n in names])
    longest = max(map(len, names))
    # Room for the unit names at 8 points (about 0.07 inch a character) and 0.3 inch a row.
    fig = Figure(figsize=(2.5 + 0.07 * longest + 1.1 * len(ratios), 1.6 + 0.3 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(drop.numpy(), cmap="Reds", aspect="auto", vmin=0)
    ax.set_xticks(range(len(ratios)), [f"{q:g}" for q in ratios], fontsize=9)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("fraction of the unit's channels or heads pruned", fontsize=9)
    ax.set_ylabel("unit (pruned alone)", fontsize=9)
    strong = float(drop.max()) / 2
    for i, name in enumerate(names):
        for j, ratio in enumerate(ratios):
            row = cell[name, ratio]
            text = f"{row['drop']:.1f}" if row["same_as"] is None else "no cut" if row["same_as"] == 0 else "="
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if row["drop"] > strong else "black")  # legible on the darkest reds
    fig.colorbar(image, label=f"{metric} drop (points)")
    ax.set_title(f"sensitivity: {metric} drop, each unit pruned alone\n"
                 "('=': the same model as a smaller ratio, not evaluated again)", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write(path, buffer.getvalue())


def ratios_yaml(suggestion: dict, max_drop: float, metric: str) -> str:
    header = (f"# From `compress analyze`: each unit's largest ratio costing at most {max_drop:g} points of "
              f"{metric} when pruned alone.\n# Paste under a prune pass; effects add up when all are pruned "
              "together, so fine-tune or ask for less.\n")
    return header + yaml.safe_dump({k: v for k, v in suggestion.items() if v}, sort_keys=False)
