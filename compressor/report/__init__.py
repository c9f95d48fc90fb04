"""The run's report: summary table on the console, report.json and report.md in the run folder."""

import json
from pathlib import Path

from rich.table import Table

from compressor.console import console
from compressor.measure import human
from compressor.state import atomic_write


def _accuracy(record: dict) -> str:
    top1 = record["metrics"].get("top1")
    return f"{top1:.2f}%" if top1 is not None else ""


def _latency(record: dict) -> str:
    rows = record["metrics"].get("latency", [])
    return "; ".join(
        f"{r['backend']} b{r['batch_size']}: {r['compressed_ms']:.2f} ms ({r['speedup']:.2f}×)" for r in rows
    )


def headline(records: list[dict]) -> list[str]:
    """The few numbers a user asks for: accuracy before/after, MACs ratio, measured speedup."""
    base, last = records[0], records[-1]
    lines = [f"MACs {human(base['macs'])} → {human(last['macs'])} ({base['macs'] / last['macs']:.2f}× fewer), "
             f"params {human(base['params'])} → {human(last['params'])} ({base['params'] / last['params']:.2f}× fewer)"]
    evaluated = [r for r in records if "top1" in r["metrics"]]
    if len(evaluated) >= 2:
        first, final = evaluated[0]["metrics"]["top1"], evaluated[-1]["metrics"]["top1"]
        lines.append(f"top-1 {first:.2f}% → {final:.2f}% ({final - first:+.2f} points)")
    for r in records:
        for row in r["metrics"].get("latency", []):
            lines.append(
                f"{row['backend']} ({row['device']}, batch {row['batch_size']}, {row['threads']} threads): "
                f"{row['baseline_ms']:.2f} → {row['compressed_ms']:.2f} ms p50, {row['speedup']:.2f}× faster"
            )
    return lines


def print_summary(records: list[dict], run_dir: Path) -> None:
    table = Table(title=f"compressed: {run_dir}", title_justify="left")
    for column in ("#", "pass", "params", "MACs", "top-1", "time", "latency p50 (speedup)"):
        table.add_column(column, justify="right" if column in ("params", "MACs", "top-1", "time") else "left")
    for r in records:
        table.add_row(str(r["index"]) if r["index"] >= 0 else "", r["type"], human(r["params"]), human(r["macs"]),
                      _accuracy(r), f"{r['seconds']:.1f}s" if r["index"] >= 0 else "", _latency(r))
    console.print(table)
    for line in headline(records):
        console.print(f"  {line}")
    console.print(f"  report: {run_dir / 'report.md'}")


def write_report(run_dir: Path, recipe, records: list[dict]) -> None:
    atomic_write(run_dir / "report.json", json.dumps({"recipe": recipe.name, "passes": records}, indent=1))
    lines = [f"# {recipe.name}", "", "| # | pass | params | MACs | top-1 | time | latency p50 (speedup) |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in records:
        lines.append(f"| {r['index'] if r['index'] >= 0 else ''} | {r['type']} | {human(r['params'])} | "
                     f"{human(r['macs'])} | {_accuracy(r)} | {r['seconds']:.1f}s | {_latency(r)} |")
    lines += ["", *[f"- {line}" for line in headline(records)], ""]
    atomic_write(run_dir / "report.md", "\n".join(lines))
