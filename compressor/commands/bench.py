"""`compress bench PATH`: latency of a run's stages, a checkpoint, an ONNX file or a TensorRT engine,
with the benchmark pass's options and its interleaved timing."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from compressor.commands import TrustCode, friendly, trusted
from compressor.console import console
from compressor.errors import CompressorError


def benchmark_params(values: dict):
    from compressor.passes.benchmark import BenchmarkParams

    try:
        return BenchmarkParams.model_validate({"type": "benchmark", **{k: v for k, v in values.items() if v is not None}})
    except ValidationError as e:
        first = e.errors()[0]
        if not first["loc"]:  # a rule across options: its message names them
            raise CompressorError(first["msg"].removeprefix("Value error, ")) from None
        raise CompressorError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']} "
                              f"(got {first.get('input')!r})") from None


# Where each benchmark setting comes from on the command line.
OPTIONS = {"backends": "--backend", "batch_sizes": "--batch", "duration_s": "--duration"}


def run_settings(run_dir: Path) -> tuple[dict, str]:
    """The settings the run's last benchmark pass timed with, the CPU threads it ran on included:
    what timing the run again repeats unless options say otherwise (without a benchmark pass, the
    threads of the run's recipe, if it sets them); and where they were found."""
    from compressor.recipe import read_yaml
    from compressor.runs import RECIPE_FILE, last_checkpoint, run_recipe
    from compressor.state import read_meta

    passes = read_yaml(run_dir / RECIPE_FILE).get("passes")
    own = [p for p in passes if isinstance(p, dict) and p.get("type") == "benchmark"] \
        if isinstance(passes, list) else []
    recipe = run_recipe(run_dir, own[-1:])
    settings = recipe.passes[0].model_dump(exclude={"type"}) if own else {}
    # A pass without `threads` timed with the run's own count, which its metrics recorded.
    timed = [r["metrics"].get("threads") for r in read_meta(last_checkpoint(run_dir))["records"]
             if r["type"] == "benchmark"]
    settings["threads"] = settings.get("threads") or (timed[-1] if timed else None) or recipe.threads
    return settings, (f"the benchmark pass of {run_dir / RECIPE_FILE}" if own else
                      "defaults (the run has no benchmark pass)")


def describe(p, origin: str, given: list[str]) -> str:
    """The settings a timing uses, and where they came from: the user sees what the numbers mean."""
    runs = f"{p.duration_s:g} s of runs" if p.duration_s else f"at least {p.iters} runs"
    return (f"timing on {', '.join(p.backends)} at batch {', '.join(map(str, p.batch_sizes))}: {p.warmup} warm-up "
            f"run{'s' * (p.warmup != 1)}, {runs}, {p.threads} CPU thread{'s' * (p.threads > 1)}, GPU backends in "
            f"{p.precision} — {origin}"
            + (f", except {', '.join(given)} given here" if given else ""))


def same_weights(a, b) -> bool:
    import torch

    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def run_candidates(run_dir: Path, stages_choice: str, trust):
    """Every stage of a finished run, as the benchmark pass would time it; a run that changed
    neither the architecture nor the weights (evaluate and export only) is one model."""
    from compressor.models import load_model
    from compressor.passes.benchmark import chosen_stages, stage_candidates
    from compressor.runs import last_checkpoint, run_recipe
    from compressor.state import read_meta

    meta = read_meta(last_checkpoint(run_dir))
    stages = chosen_stages(meta["records"], stages_choice)
    model = run_recipe(run_dir).model
    candidates = stage_candidates(stages, run_dir, lambda: load_model(model, trust), trust)
    summaries = [s.summary(first=i == 0) for i, s in enumerate(stages)]
    if stages[-1].name == "final" and same_weights(candidates[0].model, candidates[1].model):
        candidates, summaries = candidates[:1], summaries[:1]
    return candidates, summaries, tuple(meta["input_shape"])


def file_candidate(path: Path, kind: str, trust):
    """A checkpoint, ONNX file or engine as one candidate, with its MACs where known and its input shape."""
    from compressor.runtime.backends import Candidate

    if kind == "checkpoint":
        from compressor.state import load_checkpoint, read_meta

        state = load_checkpoint(path, trust)
        records = read_meta(path)["records"]
        macs = records[-1]["macs"] if records else None
        return Candidate(path.name, state.model, two_four=bool(state.masks)), macs, state.input_shape
    if kind == "onnx":
        import onnx

        try:
            dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1:]
        except Exception as e:  # not an ONNX file, or a damaged one
            raise CompressorError(f"cannot read ONNX model '{path}' ({type(e).__name__}); is it an ONNX file?") from None
        if not all(d.HasField("dim_value") for d in dims):
            raise CompressorError(f"{path}: only the batch dimension may be dynamic to benchmark it")
        return Candidate(path.name, onnx=path), None, tuple(d.dim_value for d in dims)
    if kind == "engine":
        from compressor.runtime import tensorrt as rt

        reason = rt.unavailable_reason()
        if reason:
            raise CompressorError(f"{path} is a TensorRT engine: {reason}")
        return Candidate(path.name, engine=path), None, rt.Engine(path).input_shape()
    raise CompressorError(f"--baseline takes a checkpoint, an ONNX file or an engine, not a run folder ({path})")


def file_candidates(path: Path, kind: str, baseline: Path | None, trust):
    """PATH, after --baseline where given, with what the report needs of each."""
    from compressor.runs import locate

    found = [file_candidate(baseline, locate(baseline), trust)] if baseline else []
    found.append(file_candidate(path, kind, trust))
    shapes = {shape for _, _, shape in found}
    if len(shapes) > 1:
        raise CompressorError(f"--baseline and PATH take different inputs: {' vs '.join(map(str, shapes))}")
    candidates = [c for c, _, _ in found]
    if len(candidates) == 2 and candidates[0].name == candidates[1].name:
        candidates[0].name, candidates[1].name = str(baseline), str(path)
    return candidates, [{"name": c.name, "macs": macs} for c, macs, _ in found], shapes.pop()


DEFAULT_BACKENDS = {"run": ["torch", "onnxruntime"], "checkpoint": ["torch", "onnxruntime"], "onnx": ["onnxruntime"],
                    "engine": ["tensorrt"]}


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def bench(
        path: Annotated[Path, typer.Argument(help="run folder, checkpoint folder, .onnx file or TensorRT engine")],
        baseline: Annotated[Optional[Path], typer.Option(help="time against this (checkpoint, .onnx or engine)")] = None,
        backend: Annotated[Optional[list[str]], typer.Option("--backend", "-b", help="torch | onnxruntime | tensorrt "
                                                             "(repeat; default: what PATH can run)")] = None,
        batch: Annotated[Optional[list[int]], typer.Option("--batch", help="batch size (repeat)")] = None,
        warmup: Annotated[Optional[int], typer.Option(help="untimed runs first (at least 0.5 s of them)")] = None,
        iters: Annotated[Optional[int], typer.Option(help="timed runs per model, at least (timing lasts at least 2 s)")] = None,
        duration: Annotated[Optional[float], typer.Option(help="seconds to time for, instead of --iters")] = None,
        threads: Annotated[Optional[int], typer.Option(help="CPU threads")] = None,
        stages: Annotated[Optional[str], typer.Option(help="run folders: all | ends")] = None,
        precision: Annotated[Optional[str], typer.Option(help="GPU backends: fp32 | fp16")] = None,
        semi_structured: Annotated[Optional[bool], typer.Option(help="torch on CUDA: 2:4 weights as sparse tensors")] = None,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the results here")] = None,
        trust_code: TrustCode = False,
    ):
        """Time models side by side: every stage of a run against its unmodified model, or PATH against
        --baseline; a lone model gets its throughput and latency spread. A run is timed as its benchmark
        pass timed it (backends, batches, runs, threads) except where options say otherwise."""
        import torch

        from compressor.files import atomic_write
        from compressor.passes.benchmark import benchmark
        from compressor.pipeline import resolve_device
        from compressor.report import print_table
        from compressor.report.tables import latency_table, single_latency_table
        from compressor.runs import locate

        kind = locate(path)
        options = {"backends": backend, "batch_sizes": batch, "warmup": warmup, "iters": iters, "duration_s": duration,
                   "threads": threads, "stages": stages, "precision": precision, "semi_structured": semi_structured}
        given = {k: v for k, v in options.items() if v is not None}
        settings, origin = {"backends": DEFAULT_BACKENDS[kind]}, "defaults"
        if kind == "run":
            found, origin = run_settings(path)
            settings.update(found)
        if "iters" in given:
            settings.pop("duration_s", None)  # --iters counts runs even where the run timed for a duration
        p = benchmark_params({**settings, **given})
        p.threads = p.threads or torch.get_num_threads()
        console.print(describe(p, origin, [OPTIONS.get(k, f"--{k.replace('_', '-')}") for k in given]), soft_wrap=True)
        if kind == "run":
            if baseline:
                raise CompressorError("a run folder is timed against its own unmodified model; drop --baseline")
            candidates, summaries, input_shape = run_candidates(path, p.stages, trusted(trust_code))
        else:
            candidates, summaries, input_shape = file_candidates(path, kind, baseline, trusted(trust_code))
        results = {"stages": summaries, **benchmark(candidates, p, resolve_device("auto"), input_shape)}
        if not results["latency"]:
            raise CompressorError(f"nothing could be timed here: {'; '.join(results['skipped'])}")
        # One model has no speedup to show: its throughput and spread of latency instead, as trtexec's summary.
        print_table(latency_table(results) if len(candidates) > 1 else single_latency_table(results, input_shape))
        if json_out:
            atomic_write(json_out, json.dumps(results, indent=1))
