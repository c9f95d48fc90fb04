"""`compress export RUN_OR_CHECKPOINT --format onnx|engine`: the export passes, run on a finished
run's last checkpoint (or a given one), with the pass's parameters as `--set key=value`."""

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from compressor.commands import TrustCode, friendly, trusted
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
        trust_code: TrustCode = False,
    ):
        """Export a run or checkpoint to ONNX, or build a TensorRT engine (build_engine.sh where TensorRT is absent)."""
        from compressor.pipeline import run_on_checkpoint
        from compressor.recipe import parse_assignments
        from compressor.runs import last_checkpoint, locate, run_folder_of, run_recipe
        from compressor.state import artifact_path, read_meta

        kind = locate(path)
        if kind not in ("run", "checkpoint"):
            raise CompressorError(f"export reads a run folder or a checkpoint folder, not {kind} file '{path}'")
        checkpoint = last_checkpoint(path) if kind == "run" else path
        target = out or run_folder_of(path, kind)
        passes = [{"type": PASS_OF[format], **parse_assignments(set_, "--set", "key", "opset=17")}]
        onnx = artifact_path(read_meta(checkpoint)["artifacts"], "onnx", target)
        if format == "engine" and not (onnx and onnx.is_file()):
            passes.insert(0, {"type": "export_onnx"})  # TensorRT builds from an ONNX
        recipe = run_recipe(run_folder_of(path, kind), passes, "compress export --set")
        for kind_, metrics in run_on_checkpoint(recipe, checkpoint, target, trusted(trust_code)):
            for name in ("file", "script", "skipped"):
                if name in metrics:
                    console.print(f"{kind_} {name}: {metrics[name]}")
