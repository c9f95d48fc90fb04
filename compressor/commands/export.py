"""`compress export RUN_OR_CHECKPOINT --format onnx|engine`: the export passes, run on a finished
run's last checkpoint (or a given one), with the pass's parameters as `--set key=value`."""

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from compressor.commands import friendly
from compressor.console import console
from compressor.errors import CompressorError

PASS_OF = {"onnx": "export_onnx", "engine": "export_tensorrt"}


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def export(
        path: Annotated[Path, typer.Argument(help="run folder (its last checkpoint) or checkpoint folder")],
        format: Annotated[Literal["onnx", "engine"], typer.Option("--format", "-f", help="onnx | engine")] = "onnx",
        out: Annotated[Optional[Path], typer.Option(help="folder to write into (default: the run folder)")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="a parameter of the export pass: opset=17 "
                                                          "(see `compress passes export_onnx`)")] = None,
    ):
        """Export a run or checkpoint to ONNX, or build a TensorRT engine (build_engine.sh where TensorRT is absent)."""
        import torch

        from compressor.commands.bench import last_checkpoint, locate
        from compressor.passes import PASSES
        from compressor.pipeline import RunContext
        from compressor.recipe import parse_recipe, parse_value, read_yaml
        from compressor.state import load_checkpoint

        kind = locate(path)
        if kind not in ("run", "checkpoint"):
            raise CompressorError(f"export reads a run folder or a checkpoint folder, not {kind} file '{path}'")
        checkpoint = last_checkpoint(path) if kind == "run" else path
        run_dir = path if kind == "run" else path.parent
        if not (run_dir / "recipe.yaml").is_file():
            raise CompressorError(f"{run_dir} has no recipe.yaml: the export needs the run's data for parity and metadata")
        raw = read_yaml(run_dir / "recipe.yaml")
        wanted = {"type": PASS_OF[format]}
        for assignment in set_ or []:
            key, sep, value = assignment.partition("=")
            if not sep or not key:
                raise CompressorError(f"--set '{assignment}' must look like key=value (e.g. opset=17)")
            wanted[key] = parse_value(value)
        recipe = parse_recipe({**raw, "passes": [wanted]}, "compress export --set")
        state = load_checkpoint(checkpoint)
        out_dir = out or run_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        ctx = RunContext(recipe, out_dir, torch.device("cpu"))  # exports run on the CPU; TensorRT picks its GPU

        def run_pass(params) -> None:
            ctx.metrics = {}
            PASSES.get(params.type)(params).run(state, ctx)
            for name in ("file", "script", "skipped"):
                if name in ctx.metrics:
                    console.print(f"{params.type} {name}: {ctx.metrics[name]}")

        if format == "engine" and not Path(state.artifacts.get("onnx", "")).is_file():
            run_pass(PASSES.get("export_onnx").Params(type="export_onnx"))  # TensorRT builds from an ONNX
        run_pass(recipe.passes[0])
