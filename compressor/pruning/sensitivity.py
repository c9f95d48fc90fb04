"""Sensitivity analysis: each prunable unit (a channel group, or the heads of an attention
block) is pruned alone at a few ratios and the model evaluated, so the user sees which layers
can lose much and which little. The suggestion it derives is a prune pass's `ratios:`."""

from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import yaml

from compressor.console import console
from compressor.measure import count_macs_params
from compressor.pruning.engine import Plan
from compressor.pruning.graph import Survey
from compressor.pruning.targets import prune_copy


def units(found: Survey) -> list[tuple[str, str]]:
    """(module name, kind) of everything analysed: channel groups by their root layer, then heads."""
    return [(g.root, "channels") for g in found.prunable] + [(name, "heads") for name in found.heads]


def analyse(model: nn.Module, example: torch.Tensor, plan: Plan, found: Survey, ratios: list[float],
            score: Callable[[nn.Module], float]) -> tuple[float, list[dict]]:
    """Baseline score and one row per (unit, ratio): score after pruning that unit alone, the drop,
    and the fraction of the model's MACs that pruning removed."""
    macs = count_macs_params(model, example)[0]
    base = score(model)
    rows = []
    work = units(found)
    for index, (name, kind) in enumerate(work, 1):
        scored = {macs: base}  # a cut that removes nothing, or what a smaller ratio already removed
        for ratio in ratios:
            # Ratio 0 everywhere except this unit; heads only when the unit is an attention block.
            single = replace(plan, global_=False, ratios={name: ratio}, heads=kind == "heads")
            trial = prune_copy(model, example, single, 0.0, found)
            # round_to can make a ratio cut nothing, or as much as the one before: the same model, not scored again
            value = scored[trial.macs] if trial.macs in scored else scored.setdefault(trial.macs, score(trial.model))
            rows.append({"unit": name, "kind": kind, "ratio": ratio, "score": value, "drop": base - value,
                         "macs_saved": 1 - trial.macs / macs})
        console.print(f"  {index}/{len(work)} {name} ({kind}): " + ", ".join(
            f"{r['ratio']:g} → {r['score']:.2f}" for r in rows[-len(ratios):]))
    return base, rows


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["unit"] for r in rows))
    drop = torch.tensor([[next(r["drop"] for r in rows if r["unit"] == n and r["ratio"] == q) for q in ratios]
                         for n in names])
    fig, ax = plt.subplots(figsize=(2.5 + 1.1 * len(ratios), 1.2 + 0.28 * len(names)))
    image = ax.imshow(drop.numpy(), cmap="Reds", aspect="auto", vmin=0)
    ax.set_xticks(range(len(ratios)), [f"{q:g}" for q in ratios])
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("fraction of the unit pruned")
    for i in range(len(names)):
        for j in range(len(ratios)):
            ax.text(j, i, f"{drop[i, j]:.1f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, label=f"{metric} drop (points)")
    ax.set_title("sensitivity: each unit pruned alone")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ratios_yaml(suggestion: dict, max_drop: float, metric: str) -> str:
    header = (f"# From `compress analyze`: each unit's largest ratio costing at most {max_drop:g} points of "
              f"{metric} when pruned alone.\n# Paste under a prune pass; effects add up when all are pruned "
              "together, so fine-tune or ask for less.\n")
    return header + yaml.safe_dump({k: v for k, v in suggestion.items() if v}, sort_keys=False)
