"""Putting N:M masks into force on a State, and saying what was done: shared by the
semi_structured pass and by SR-STE training, whose masks freeze when it ends."""

import torch
from rich.table import Table

from compressor.console import console
from compressor.sparsity.selection import weight_key


def apply_masks(state, layers: dict, masks: dict[str, torch.Tensor]) -> list[dict]:
    """Zeroes the pruned weights and records the masks in the State; one row per layer."""
    rows = []
    with torch.no_grad():
        for name, module in layers.items():
            key = weight_key(name)
            mask = masks[key].to(module.weight)
            module.weight.mul_(mask)
            state.masks[key] = mask.cpu()
            rows.append({"layer": name, "shape": list(module.weight.shape),
                         "zeros": float((module.weight == 0).float().mean())})
    return rows


def sparsity_metrics(model, pattern: str, rows: list[dict], skipped: list[dict]) -> dict:
    """What the masks did; `note` is the one line a report shows for it."""
    weights = sum(torch.Size(r["shape"]).numel() for r in rows)
    zeros = sum(r["zeros"] * torch.Size(r["shape"]).numel() for r in rows)
    total = sum(p.numel() for p in model.parameters())
    dense = f"; dense: {', '.join(s['layer'] for s in skipped)}" if skipped else ""
    note = (f"{pattern} sparse: {len(rows)} layers, {zeros / max(weights, 1):.1%} of their weights zero "
            f"({zeros / total:.1%} of all parameters){dense}")
    return {"pattern": pattern, "sparse_layers": rows, "dense_layers": skipped, "masked_weights": weights,
            "zeroed_share": zeros / max(weights, 1), "zeroed_share_of_model": zeros / total, "note": note}


def show_layers(pattern: str, rows: list[dict], skipped: list[dict]) -> None:
    table = Table(title=f"{pattern}: {len(rows)} layers made sparse, {len(skipped)} not",
                  title_justify="left", show_edge=False)
    for column in ("layer", "shape", "zeros", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["layer"], "×".join(map(str, row["shape"])), f"{row['zeros']:.1%}", "")
    for row in skipped:
        table.add_row(row["layer"], "", "", f"[dim]{row['reason']}[/dim]")
    console.print(table)
