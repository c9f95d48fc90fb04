"""`compress export RUN_OR_CHECKPOINT --format onnx|engine`: the export passes, run on a finished
run's last checkpoint (or a given one), with the pass's parameters as `--set key=value` and, for
engines, Ultralytics-style options that set the same parameters. `--format onnx --int8` is the
quantize pass (a Q/DQ ONNX); `--format engine --int8` builds from that file where it was made for
TensorRT. `--format engine` writes the bundle a device builds and checks its engine from, and
exits 3 where no engine was built here."""

import shlex
import shutil
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from compressor.commands import TrustCode, friendly, trusted
from compressor.console import console
from compressor.errors import EXIT_INCOMPLETE, CompressorError
from compressor.files import replacing

PASS_OF = {"onnx": "export_onnx", "engine": "export_tensorrt"}


def parse_profile(text: str) -> dict[str, int]:
    """`--dynamic 1:8:32` -> the dynamic-batch profile's parameters."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise CompressorError(f"--dynamic {text!r}: give MIN:OPT:MAX batch sizes, e.g. --dynamic 1:8:32")
    return dict(zip(("min_batch", "opt_batch", "max_batch"), map(int, parts)))


def engine_options(half: bool, int8: bool, batch: int | None, dynamic: str | None, workspace: int | None,
                   dla: int | None) -> tuple[dict, list[str]]:
    """The export_tensorrt parameters these options set, and the options as typed (for the hint that
    repeats them on the target)."""
    if half and int8:
        raise CompressorError("--half and --int8 both given: choose one precision")
    if batch is not None and dynamic is not None:
        raise CompressorError("--batch N builds a static batch and --dynamic MIN:OPT:MAX a range: choose one")
    params, typed = {}, []
    if half or int8:
        params["precision"] = "int8" if int8 else "fp16"
        typed.append("--int8" if int8 else "--half")
    if batch is not None:
        params.update(min_batch=batch, opt_batch=batch, max_batch=batch)
        typed += ["--batch", str(batch)]
    if dynamic is not None:
        params.update(parse_profile(dynamic))
        typed += ["--dynamic", dynamic]
    for key, value, option in (("workspace_mb", workspace, "--workspace"), ("dla_core", dla, "--dla")):
        if value is not None:
            params[key] = value
            typed += [option, str(value)]
    return params, typed


def check_image_size(imgsz: int, checkpoint: Path) -> None:
    """The export builds at the size the model was compressed and checked at: say so when asked for another."""
    from compressor.state import read_meta

    channels, *size = read_meta(checkpoint)["input_shape"]
    if size != [imgsz, imgsz]:
        raise CompressorError(f"--imgsz {imgsz}: this model's input size is fixed at {'x'.join(map(str, size))} "
                              f"(its checkpoint's {channels}-channel input, which every parity check used); drop "
                              f"--imgsz, or compress it at {imgsz} with `compress run RECIPE --set "
                              f"data.image_size={imgsz}`")


def copy_into(source: Path, folder: Path) -> None:
    """The run's ONNX into the bundle's folder (atomically), so the folder holds all a device needs."""
    with replacing(folder / source.name) as tmp:
        shutil.copyfile(source, tmp)


def engine_source(in_target: Path | None, in_run: Path | None) -> bool:
    """Whether the ONNX an engine builds from is in the folder written into, copied there from the run
    folder where only that has it: the very file the run checked, not a new export."""
    if in_target and not in_target.is_file() and in_run.is_file():
        copy_into(in_run, in_target.parent)
    return bool(in_target and in_target.is_file())


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def export(
        path: Annotated[Path, typer.Argument(help="run folder (its last checkpoint) or checkpoint folder")],
        format: Annotated[Literal["onnx", "engine"], typer.Option("--format", "-f", help="onnx | engine")] = "onnx",
        out: Annotated[Optional[Path], typer.Option(help="folder to write into (default: the run folder)")] = None,
        half: Annotated[bool, typer.Option("--half", help="engine: fp16 (precision=fp16)")] = False,
        int8: Annotated[bool, typer.Option("--int8", help="onnx: the Q/DQ INT8 ONNX (the quantize pass; --set "
                                           "target=tensorrt for engines) | engine: int8 from it "
                                           "(precision=int8)")] = False,
        imgsz: Annotated[Optional[int], typer.Option(help="engine: the input size, where the model takes "
                                                          "another (a compressed model's is fixed)")] = None,
        batch: Annotated[Optional[int], typer.Option(help="engine: static batch (min/opt/max_batch=N)")] = None,
        dynamic: Annotated[Optional[str], typer.Option(help="engine: batch profile MIN:OPT:MAX")] = None,
        workspace: Annotated[Optional[int], typer.Option(help="engine: builder memory in MiB (workspace_mb)")] = None,
        dla: Annotated[Optional[int], typer.Option(help="engine: Jetson DLA core N, GPU fallback (dla_core)")] = None,
        bundle_only: Annotated[bool, typer.Option("--bundle-only", help="engine: write only the bundle for the "
                                                  "target, build nothing here, exit 0 (build=false)")] = False,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="a parameter of the export pass: opset=17 "
                                                          "(see `compress passes export_onnx`, `quantize` for "
                                                          "--int8)")] = None,
        trust_code: TrustCode = False,
    ):
        """Export a run or checkpoint to ONNX, or build a TensorRT engine and the bundle (ONNX, build_engine.sh,
        check_engine.sh, README.md) a device builds and checks its own from. Exit code 3: no engine built here."""
        from compressor.passes.export_tensorrt import qdq_onnx
        from compressor.pipeline import run_on_checkpoint
        from compressor.recipe import parse_assignments
        from compressor.runtime import tensorrt as rt
        from compressor.runs import last_checkpoint, locate, run_folder_of, run_recipe
        from compressor.state import artifact_path, read_meta

        kind = locate(path)
        if kind not in ("run", "checkpoint"):
            raise CompressorError(f"export reads a run folder or a checkpoint folder, not {kind} file '{path}'")
        checkpoint = last_checkpoint(path) if kind == "run" else path
        run_dir = run_folder_of(path, kind)
        target = out or run_dir
        options, typed = engine_options(half, int8, batch, dynamic, workspace, dla)
        if format == "onnx" and (typed not in ([], ["--int8"]) or imgsz is not None or bundle_only):
            raise CompressorError("--half, --imgsz, --batch, --dynamic, --workspace, --dla and --bundle-only are for "
                                  "--format engine")
        pass_type = "quantize" if format == "onnx" and int8 else PASS_OF[format]
        if pass_type == "quantize":
            options = {}  # a Q/DQ ONNX is int8 by what it is
        assigned = parse_assignments(set_, "--set", "key", "opset=17")
        twice = sorted(options.keys() & assigned.keys())
        if twice:
            raise CompressorError(f"{', '.join(twice)} set both by an option and by --set: give it once")
        if imgsz is not None:
            check_image_size(imgsz, checkpoint)
            typed += ["--imgsz", str(imgsz)]
        passes = [{"type": pass_type, **options, **assigned, **({"build": False} if bundle_only else {})}]
        artifacts = read_meta(checkpoint)["artifacts"]
        if format == "engine":
            # TensorRT builds from an ONNX: int8 from the Q/DQ one, else by calibrating the float one (here only).
            int8 = {**options, **assigned}.get("precision") == "int8"
            qdq = int8 and engine_source(qdq_onnx(artifacts, target), qdq_onnx(artifacts, run_dir))
            if (not qdq and not engine_source(artifact_path(artifacts, "onnx", target),
                                              artifact_path(artifacts, "onnx", run_dir))
                    and not (int8 and rt.unavailable_reason())):
                passes.insert(0, {"type": "export_onnx"})
        recipe = run_recipe(run_dir, passes, "compress export --set")
        metrics = {}
        for kind_, metrics in run_on_checkpoint(recipe, checkpoint, target, trusted(trust_code)):
            for name in ("file", "bundle", "skipped"):
                if name in metrics:
                    console.print(f"{kind_} {name}: {metrics[name]}")
        if "skipped" in metrics:  # an engine was asked for and not built: a skip is not a success
            again = shlex.join(["compress", "export", str(path), "--format", "engine", *typed,
                                *(word for a in set_ or [] for word in ("--set", a))])
            if "bundle" in metrics:
                where = (f"the bundle for the target is in {target}: run bash build_engine.sh there, then bash "
                         f"check_engine.sh (or `{again}` where TensorRT is)")
            else:
                where = f"on the target, run `{again}`"
            console.print(f"[yellow]no engine built here[/yellow] ({metrics['skipped']}); {where}", soft_wrap=True)
            raise typer.Exit(EXIT_INCOMPLETE)
