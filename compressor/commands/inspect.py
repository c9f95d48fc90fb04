"""`compress inspect MODEL_SPEC_OR_RUN`: what structured pruning can and cannot remove from a model."""

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from compressor.commands import JsonOutput, TrustCode, friendly, trusted
from compressor.console import console
from compressor.errors import CompressorError


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) <= 0:
        raise CompressorError(f"--input-shape '{text}' must be positive integers joined by commas, e.g. 3,224,224")
    return shape


def _listed(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" … (+{len(names) - limit})" if len(names) > limit else "")


def print_onnx(path: Path) -> dict:
    from compressor.sparsity.nm import onnx_nm_report

    rows = onnx_nm_report(path)
    table = Table(title=f"{path}: weights and their N:M sparsity", title_justify="left")
    for column in ("weight", "op", "shape", "N:M", "2:4 tensor cores", "zeros"):
        table.add_column(column, justify="left" if column in ("weight", "op") else "right")
    for row in rows:
        table.add_row(row["name"], row["op"], "×".join(map(str, row["shape"])), row["nm"] or "dense",
                      "yes" if row["sparse_2_4"] else "no", f"{row['zeros']:.1%}")
    console.print(table)
    return {"onnx": str(path), "weights": rows}


def print_inspection(report) -> None:
    from compressor.measure import human

    found = report.survey
    console.print(f"[bold]{report.title}[/bold], input {report.input_shape}: params {human(report.params)}, "
                  f"MACs {human(report.macs)}")
    groups = Table(title=f"prunable channel groups ({len(found.prunable)}): the layers in a row lose channels "
                         "together", title_justify="left")
    for column in ("layer", "channels", "also loses outputs", "inputs that follow"):
        groups.add_column(column, justify="right" if column == "channels" else "left")
    for g in found.prunable:
        groups.add_row(g.root, str(g.width), _listed(g.layers), _listed(g.followers))
    console.print(groups)
    if found.heads:
        heads = Table(title=f"attention blocks whose heads can be removed ({len(found.heads)})", title_justify="left")
        heads.add_column("block")
        heads.add_column("heads", justify="right")
        for name, count in found.heads.items():
            heads.add_row(name, str(count))
        console.print(heads)
    blocked = [g for g in found.groups if g.reason]
    if blocked or found.untraced:
        table = Table(title=f"layers whose output channels cannot be pruned ({len(blocked) + len(found.untraced)})",
                      title_justify="left")
        table.add_column("layer")
        table.add_column("why")
        for g in blocked:
            table.add_row(", ".join([g.root, *g.layers][:3]) + (" …" if len(g.layers) > 2 else ""), g.reason)
        for name in found.untraced:
            table.add_row(name, "the forward pass never runs it")
        console.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def inspect(
        target: Annotated[str, typer.Argument(help="model source (torchvision:resnet50), recipe .yaml, run "
                                                   "folder, or .onnx file")],
        input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="one sample's shape, for a model "
                                                       "source (default: its native size, else 3,224,224)")] = None,
        arg: Annotated[Optional[list[str]], typer.Option("--arg", help="model factory argument: "
                                                                       "num_classes=10")] = None,
        ignore: Annotated[Optional[list[str]], typer.Option("--ignore", help="module-name glob to keep, as "
                                                                             "prune's ignore")] = None,
        trust_code: TrustCode = False,
        as_json: JsonOutput = False,
    ):
        """Params, MACs, the prunable channel groups and attention heads, and every layer that cannot
        be pruned with the reason (for an .onnx file: each weight's N:M sparsity)."""
        from compressor.pruning.inspection import inspect_model
        from compressor.recipe import parse_assignments
        from compressor.runs import load_target

        if target.endswith(".onnx"):
            return print_onnx(Path(target))
        kwargs = parse_assignments(arg, "--arg", "name", "num_classes=10")
        model, shape, title, patterns = load_target(target, _shape(input_shape) if input_shape else None, kwargs,
                                                     trusted(trust_code))
        report = inspect_model(model, shape, title, [*patterns, *(ignore or [])])
        print_inspection(report)
        return dataclasses.asdict(report)
