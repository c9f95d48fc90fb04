"""The run's report: a summary on the console, and report.json (one record per pass), report.md
and report.png in the run folder. `render` rebuilds the Markdown and the PNG from report.json."""

import json
from pathlib import Path

from pydantic import Field, ValidationError
from rich.table import Table

from compressor.console import console
from compressor.errors import CompressorError
from compressor.files import atomic_write
from compressor.report.plot import write_png
from compressor.report.tables import (TableData, benchmark_metrics, headline, latency_search_tables, latency_table,
                                      passes_table, stages_table)
from compressor.schema import Loose, Record

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"


def tables(records: list[dict]) -> list[TableData]:
    bench = benchmark_metrics(records)
    timed = [stages_table(bench), latency_table(bench)] if bench and bench["latency"] else []
    return [passes_table(records), *timed, *latency_search_tables(records)]


def print_table(data: TableData) -> None:
    table = Table(title=data.title, title_justify="left", caption=data.note, caption_justify="left")
    shown = [i for i, column in enumerate(data.columns) if column not in data.detail]
    for i in shown:
        column = data.columns[i]
        table.add_column(column, justify="right" if column in data.right else "left", no_wrap=column in data.right)
    for row in data.rows:
        table.add_row(*(row[i] for i in shown))
    console.print(table)


def print_summary(records: list[dict], run_dir: Path) -> None:
    for data in tables(records):
        print_table(data)
    for line in headline(records):
        console.print(f"  {line}")
    console.print(f"  report: {run_dir / REPORT_MD}")


def _markdown(doc: dict) -> str:
    records = doc["passes"]
    lines = [f"# {doc['recipe']}", ""]
    if doc.get("model"):
        shape = f", input {'×'.join(map(str, doc['input_shape']))}" if doc.get("input_shape") else ""
        threads = f", {doc['threads']} CPU threads for training and evaluation" if doc.get("threads") else ""
        lines += [f"Model `{doc['model']}` on `{doc['dataset']}`{shape}{threads}.", ""]
    lines += [f"- {line}" for line in headline(records)] + [""]
    bench = benchmark_metrics(records)
    if bench and bench["latency"]:
        lines += [f"![accuracy vs latency and latency per stage]({REPORT_PNG})", ""]
    for data in tables(records):
        lines += [f"## {data.title.capitalize()}", "", *([data.note, ""] if data.note else []),
                  "| " + " | ".join(data.columns) + " |",
                  "|" + "|".join("---:" if c in data.right else "---" for c in data.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in data.rows] + [""]
    return "\n".join(lines)


def _write_views(run_dir: Path, doc: dict) -> None:
    atomic_write(run_dir / REPORT_MD, _markdown(doc))
    bench = benchmark_metrics(doc["passes"])
    if bench and bench["latency"]:
        write_png(run_dir / REPORT_PNG, doc["recipe"], bench)


def write_report(run_dir: Path, recipe, records: list[dict], run: dict | None = None) -> None:
    """`run`: how the run was made (threads, input_shape), shown in report.md's header."""
    doc = {"recipe": recipe.name, "model": recipe.model.source, "dataset": recipe.data.dataset, **(run or {}),
           "passes": records}
    atomic_write(run_dir / REPORT_JSON, json.dumps(doc, indent=1))
    _write_views(run_dir, doc)


def render(run_dir: Path, show: bool = False) -> dict:
    """Rewrites report.md and report.png from the run's report.json (and prints its summary
    where `show`); returns the report."""
    path = Path(run_dir) / REPORT_JSON
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompressorError(f"{path} does not exist: is {run_dir} a finished run folder (compress run … --out DIR)?") from None
    except json.JSONDecodeError as e:
        raise CompressorError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CompressorError(f"cannot read {path} ({type(e).__name__})") from None
    try:
        doc = ReportDoc.model_validate(doc).model_dump(mode="json")
        _write_views(Path(run_dir), doc)
        if show:
            print_summary(doc["passes"], Path(run_dir))
    except (ValidationError, KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        # A report.json edited by hand or written by another version: say so, quote little of it.
        raise CompressorError(f"{path} is not a report this version of compress wrote "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); run the recipe again") from None
    return doc


class ReportDoc(Loose):
    recipe: str
    model: str | None = None
    dataset: str | None = None
    threads: int | None = Field(None, gt=0)
    input_shape: list[int] | None = None
    passes: list[Record] = Field(min_length=1)
