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
from compressor.report.provenance import caveat, provenance, trained_weights
from compressor.report.tables import (TableData, benchmark_metrics, headline, latency_search_tables, latency_table,
                                      passes_table, stages_table)
from compressor.schema import Loose, Record

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"


def tables(records: list[dict], warning: str | None = None) -> list[TableData]:
    """`warning`: why the accuracy means nothing (provenance.caveat), which marks its columns."""
    bench = benchmark_metrics(records)
    timed = [stages_table(bench, records, warning), latency_table(bench)] if bench and bench["latency"] else []
    return [passes_table(records, warning), *timed, *latency_search_tables(records)]


def print_table(data: TableData) -> None:
    table = Table(title=data.title, title_justify="left", caption=data.note, caption_justify="left")
    shown = [i for i, column in enumerate(data.columns) if column not in data.detail]
    for i in shown:
        column = data.columns[i]
        table.add_column(column, justify="right" if column in data.right else "left", no_wrap=column in data.right)
    for row in data.rows:
        table.add_row(*(row[i] for i in shown))
    if console.is_terminal:
        console.print(table)
        return
    # A file has no width: a table wider than the columns assumed for one is written whole, not cut short.
    assumed = console.width
    console.width = max(assumed, console.measure(table, options=console.options.update_width(10_000)).maximum)
    try:
        console.print(table)
    finally:
        console.width = assumed


def print_summary(records: list[dict], run_dir: Path) -> None:
    """The tables and headline of the run; what report.json says of the run (if written) flags
    accuracy that means nothing."""
    try:
        warning = caveat(json.loads((run_dir / REPORT_JSON).read_text()))
    except (OSError, ValueError, AttributeError):  # no report.json, or not one of ours: nothing to flag by
        warning = None
    for data in tables(records, warning):
        print_table(data)
    if warning:
        console.print(f"  [bold yellow]accuracy numbers here are meaningless[/bold yellow]: {warning}")
    for line in headline(records, warning):
        console.print(f"  {line}", soft_wrap=True)  # a line of a log file stays one line
    console.print(f"  report: {run_dir / REPORT_MD}")


def _header(doc: dict) -> list[str]:
    """Which model, data and settings; when, by what version and command."""
    lines = []
    if doc.get("model"):
        shape = f", input {'×'.join(map(str, doc['input_shape']))}" if doc.get("input_shape") else ""
        wait = f", {doc['wait']}" if doc.get("wait") else ""
        threads = (f", {doc['threads']} CPU thread{'s' * (doc['threads'] > 1)} for training and evaluation{wait}"
                   if doc.get("threads") else "")
        lines.append(f"Model `{doc['model']}` on `{doc['dataset']}`{shape}{threads}.")
    if doc.get("created"):
        lines.append(f"Made {doc['created']} by compress {doc.get('version', '?')}"
                     + (f": `{doc['command']}`" if doc.get("command") else "") + ".")
    return lines


def _markdown(doc: dict) -> str:
    records = doc["passes"]
    warning = caveat(doc)
    lines = [f"# {doc['recipe']}", ""]
    if warning:
        lines += [f"> **Accuracy numbers here are meaningless**: {warning}. They show that the passes ran, "
                  "not how well the model does.", ""]
    header = _header(doc)
    lines += [*header, ""] if header else []
    lines += [f"- {line}" for line in headline(records, warning)] + [""]
    bench = benchmark_metrics(records)
    if bench and bench["latency"]:
        lines += [f"![accuracy vs latency and latency per stage]({REPORT_PNG})", ""]
    for data in tables(records, warning):
        lines += [f"## {data.title.capitalize()}", "", *([data.note, ""] if data.note else []),
                  "| " + " | ".join(data.columns) + " |",
                  "|" + "|".join("---:" if c in data.right else "---" for c in data.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in data.rows] + [""]
    return "\n".join(lines)


def _write_views(run_dir: Path, doc: dict) -> None:
    atomic_write(run_dir / REPORT_MD, _markdown(doc))
    bench = benchmark_metrics(doc["passes"])
    if bench and bench["latency"]:
        write_png(run_dir / REPORT_PNG, doc["recipe"], bench, caveat(doc))


def write_report(run_dir: Path, recipe, records: list[dict], run: dict | None = None) -> None:
    """`run`: how the run was made (threads, wait, input_shape), shown in report.md's header with when,
    by which version and command this process made it."""
    doc = {"recipe": recipe.name, "model": recipe.model.source, "dataset": recipe.data.dataset,
           "trained_weights": trained_weights(recipe), **provenance(), **(run or {}), "passes": records}
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
    wait: str | None = Field(None, max_length=300)  # how the threads waited, and why
    input_shape: list[int] | None = None
    trained_weights: bool | None = None
    created: str | None = None
    version: str | None = None
    command: str | None = None
    passes: list[Record] = Field(min_length=1)
