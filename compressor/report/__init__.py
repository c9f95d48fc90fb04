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


def latency_rows(records: list[dict]) -> list[dict]:
    return [row for r in records for row in r["metrics"].get("latency", [])]


LATENCY_COLUMNS = ("backend", "batch", "unmodified p50", "compressed p50", "compressed p90", "speedup")


def _latency_cells(row: dict) -> tuple[str, ...]:
    return (row["backend"], str(row["batch_size"]), f"{row['baseline_ms']:.2f} ms", f"{row['compressed_ms']:.2f} ms",
            f"{row['compressed']['p90_ms']:.2f} ms", f"{row['speedup']:.2f}×")


def _latency_title(rows: list[dict]) -> str:
    where = sorted({f"{r['device']}, {r['threads']} threads" for r in rows})
    return f"latency on {'; '.join(where)} — unmodified vs compressed, timed interleaved in one process"


def headline(records: list[dict]) -> list[str]:
    """The few numbers a user asks for: accuracy before/after, MACs ratio, measured speedup."""
    base, last = records[0], records[-1]
    lines = [f"MACs {human(base['macs'])} → {human(last['macs'])} ({base['macs'] / last['macs']:.2f}× fewer), "
             f"params {human(base['params'])} → {human(last['params'])} ({base['params'] / last['params']:.2f}× fewer)"]
    evaluated = [r for r in records if "top1" in r["metrics"]]
    if len(evaluated) >= 2:
        first, final = evaluated[0]["metrics"]["top1"], evaluated[-1]["metrics"]["top1"]
        lines.append(f"top-1 {first:.2f}% → {final:.2f}% ({final - first:+.2f} points)")
    for row in latency_rows(records):
        lines.append(f"{row['backend']} batch {row['batch_size']}: {row['speedup']:.2f}× faster "
                     f"({row['baseline_ms']:.2f} → {row['compressed_ms']:.2f} ms p50)")
    return lines


def print_summary(records: list[dict], run_dir: Path) -> None:
    table = Table(title=f"compressed: {run_dir}", title_justify="left")
    for column in ("#", "pass", "params", "MACs", "top-1", "time"):
        table.add_column(column, justify="left" if column == "pass" else "right")
    for r in records:
        table.add_row(str(r["index"]) if r["index"] >= 0 else "", r["type"], human(r["params"]), human(r["macs"]),
                      _accuracy(r), f"{r['seconds']:.1f}s" if r["index"] >= 0 else "")
    console.print(table)
    rows = latency_rows(records)
    if rows:
        latency = Table(title=_latency_title(rows), title_justify="left")
        for column in LATENCY_COLUMNS:
            latency.add_column(column, justify="left" if column in ("backend", "device") else "right")
        for row in rows:
            latency.add_row(*_latency_cells(row))
        console.print(latency)
    for line in headline(records):
        console.print(f"  {line}")
    console.print(f"  report: {run_dir / 'report.md'}")


def write_report(run_dir: Path, recipe, records: list[dict]) -> None:
    atomic_write(run_dir / "report.json", json.dumps({"recipe": recipe.name, "passes": records}, indent=1))
    lines = [f"# {recipe.name}", "", "| # | pass | params | MACs | top-1 | time |", "|---|---|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['index'] if r['index'] >= 0 else ''} | {r['type']} | {human(r['params'])} | "
                     f"{human(r['macs'])} | {_accuracy(r)} | {r['seconds']:.1f}s |")
    rows = latency_rows(records)
    if rows:
        lines += ["", _latency_title(rows)[0].upper() + _latency_title(rows)[1:] + ":", "",
                  "| " + " | ".join(LATENCY_COLUMNS) + " |", "|---|" + "---:|" * (len(LATENCY_COLUMNS) - 1)]
        lines += ["| " + " | ".join(_latency_cells(row)) + " |" for row in rows]
    lines += ["", *[f"- {line}" for line in headline(records)], ""]
    atomic_write(run_dir / "report.md", "\n".join(lines))
