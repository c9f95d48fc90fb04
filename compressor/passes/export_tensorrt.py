"""TensorRT engine from the run's ONNX where TensorRT and an NVIDIA GPU are present, and always the
bundle a device builds and checks its own engine from (engines are device-specific): the ONNX,
build_engine.sh, check_engine.sh and README.md, all in the run folder (runtime/trtexec.py).
int8 builds from the run's Q/DQ ONNX made for TensorRT (the quantize pass, target: tensorrt), on
every TensorRT version, here or on the target; without one only TensorRT 8.6 or 10 here can
calibrate it. The files it writes are built aside and replace the run folder's only once the
pass's checks passed."""

import copy
import json
import os
from pathlib import Path
from typing import Literal

import onnx
from pydantic import Field, model_validator

from compressor.console import console
from compressor.errors import CompressorError
from compressor.files import Staging
from compressor.passes import Pass, register_pass
from compressor.passes.export_onnx import ExportOnnxParams, first_inputs
from compressor.passes.quantize import INT8_ONNX, TARGET_KEY, QuantizeParams
from compressor.runtime import onnx as ox
from compressor.runtime import tensorrt as rt
from compressor.runtime import trtexec
from compressor.runs import RECIPE_FILE
from compressor.schema import PassParams, PlainName
from compressor.state import artifact_path

# Logit tolerances against onnxruntime: TF32 convolutions by default in fp32, then fp16, then int8.
TOLERANCE = {"fp32": (1e-2, 1e-2), "fp16": (5e-2, 5e-2), "int8": (0.5, 0.1)}
NEEDS_ONNX = "export_tensorrt builds from the run's ONNX: put export_onnx before it"


class ExportTensorRTParams(PassParams):
    type: Literal["export_tensorrt"] = "export_tensorrt"
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", description="TensorRT 8.6 and 10: builder flags; 11: fp16 comes from an fp16 ONNX written beside "
                            "the ONNX; int8 builds from the run's Q/DQ ONNX made for TensorRT (quantize, target: "
                            "tensorrt), else TensorRT 8.6 or 10 here calibrates it on validation images")
    sparse_weights: bool | None = Field(None, description="let TensorRT use 2:4 sparse kernels (default: on when "
                                                          "a weight layer of the ONNX is 2:4)")
    min_batch: int = Field(1, gt=0, description="smallest batch of the dynamic-batch profile")
    opt_batch: int = Field(8, gt=0, description="the batch TensorRT tunes its kernels for")
    max_batch: int = Field(32, gt=0, description="largest batch of the dynamic-batch profile")
    workspace_mb: int = Field(1024, gt=0, description="builder scratch memory")
    atol: float | None = Field(None, ge=0, description="parity tolerance against onnxruntime (default by precision; "
                                                       "times the largest output where that is below 1)")
    rtol: float | None = Field(None, ge=0, description="parity tolerance against onnxruntime (default by precision)")
    parity_samples: int = Field(256, gt=0, description="evaluation inputs compared")
    calibration_samples: int = Field(512, gt=0, description="int8 without a Q/DQ ONNX: validation images that set "
                                                            "the scales")
    dla_core: int | None = Field(None, ge=0, description="build for this DLA core of a Jetson (Orin has 0 and 1), "
                                                         "layers it cannot run falling back to the GPU; fp16 or int8")
    build: bool = Field(True, description="build the engine here where TensorRT and a GPU are; false: only the "
                                          "bundle the target device builds it from")
    required: bool = Field(False, description="fail, instead of writing the bundle only, where TensorRT or a GPU "
                                              "is missing")
    filename: PlainName = Field("model.engine", description="written into the run folder")

    @model_validator(mode="after")
    def _batches_in_order(self):
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"needs min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, "
                             f"{self.max_batch}")
        return self

    @model_validator(mode="after")
    def _consistent(self):
        if self.dla_core is not None and self.precision == "fp32":
            raise ValueError("dla_core needs precision fp16 or int8 (DLA runs no fp32): use fp16 (--half)")
        if not self.build and self.required:
            raise ValueError("build: false asks for the bundle only, required: true for an engine built here; "
                             "drop one")
        return self


def target_command(run: str, params: ExportTensorRTParams) -> str:
    """The `compress export` that repeats this pass on the target, with every parameter the recipe gave
    but `build` (it builds there)."""
    given = {k: v for k, v in params.model_dump().items() if k in params.model_fields_set - {"type", "build"}}
    values = " ".join(f"--set {k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in given.items())
    return f"compress export {run} --format engine {values}".rstrip()


def qdq_onnx(artifacts: dict, folder: Path) -> Path:
    """Where the run's Q/DQ ONNX is: the quantize pass's artifact, else the file `compress export
    --format onnx --int8` writes (which checkpoints nothing, so no artifact names it)."""
    return artifact_path(artifacts, "onnx_int8", folder) or Path(folder) / INT8_ONNX


def metadata(path: Path) -> dict[str, str]:
    return {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}


def tensorrt_qdq(artifacts: dict, folder: Path) -> Path | None:
    """The run's Q/DQ ONNX where there is one; one made for another runtime is refused."""
    path = qdq_onnx(artifacts, folder)
    if not path.is_file():
        return None
    target = metadata(path).get(TARGET_KEY)
    if target != "tensorrt":
        made_for = ("onnxruntime (uint8 activations with a zero point)" if target == "onnxruntime" else
                    f"no runtime it names (no {TARGET_KEY} in its metadata)")
        raise CompressorError(f"{path} is a Q/DQ ONNX made for {made_for}, and TensorRT takes symmetric int8 only: "
                              f"{rt.qdq_command()} writes one for TensorRT")
    return path


def two_four_layers(path: Path) -> tuple[int, int]:
    """(layers whose weights are 2:4, weight layers) in the ONNX, as TensorRT will see them."""
    from compressor.sparsity.nm import onnx_nm_report

    rows = onnx_nm_report(path)
    return sum(row["sparse_2_4"] for row in rows), len(rows)


def fixed_batch(path: Path) -> int | None:
    """The ONNX's batch size, or None where the batch is dynamic."""
    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def first_batches(loader, samples: int, multiple: int):
    """Real images of `loader`, a whole number of `multiple`-sized batches."""
    images = first_inputs(loader, max(samples, multiple))
    return images[: len(images) // multiple * multiple]


@register_pass
class ExportTensorRT(Pass):
    """TensorRT engine checked against onnxruntime, and the bundle a target device builds its own from.

    TensorRT 8.6, 10.x and 11.x are handled, by the installed version here and by the target's
    trtexec version in the scripts."""

    Params = ExportTensorRTParams

    @classmethod
    def order_problem(cls, params, before) -> str | None:
        sources = (ExportOnnxParams, QuantizeParams) if params.precision == "int8" else ExportOnnxParams
        return None if any(isinstance(p, sources) for p in before) else NEEDS_ONNX

    def run(self, state, ctx) -> dict:
        p = self.params
        reason = rt.unavailable_reason()
        if reason and p.required:
            raise CompressorError(f"required: true, but {reason}; run where an NVIDIA GPU and TensorRT "
                                  f"{rt.supported_text()} are, or drop required to get the bundle for the target")
        qdq = tensorrt_qdq(state.artifacts, ctx.run_dir) if p.precision == "int8" else None
        calibrate = p.precision == "int8" and qdq is None  # TensorRT 8.6 or 10 here can; no script can
        if calibrate and (reason or not p.build):
            why = self.no_qdq(state, ctx)
            if not p.build:
                raise CompressorError(why)
            return self.skip({"precision": p.precision}, f"{reason}; {why}")
        onnx_path = qdq or self.float_onnx(state, ctx)
        fixed = fixed_batch(onnx_path)
        batches = self.batches(fixed)
        sparse_layers, layers = two_four_layers(onnx_path)
        sparse = sparse_layers > 0 if p.sparse_weights is None else p.sparse_weights
        metrics = {"precision": p.precision, "sparse_weights": sparse, "two_four_layers": f"{sparse_layers}/{layers}",
                   "batches": [batches.min, batches.opt, batches.max] if batches else [fixed] * 3}
        if qdq:
            metrics["qdq_onnx"] = str(qdq)
        fp16_onnx = onnx_path.with_name(Path(onnx_path.name).with_suffix(".fp16.onnx").name)
        plans = {major: self.plan(major, onnx_path.name, fp16_onnx.name, sparse, qdq is not None)
                 for major in rt.SUPPORTED_MAJORS}
        atol, rtol = self.tolerance()
        bundle = trtexec.Bundle(p.filename, onnx_path.name, plans, tuple(state.input_shape), batches, fixed,
                                p.workspace_mb, p.dla_core, atol, rtol, {
                                    "model": f"{state.source['source']} (recipe {ctx.recipe.name})",
                                    "input": f"'{ox.INPUT_NAME}', one sample "
                                             f"{' x '.join(map(str, state.input_shape))}",
                                    "precision": (f"int8, explicit: the Q/DQ ONNX {qdq.name} made for TensorRT"
                                                  if qdq else p.precision),
                                    "batch profile": (f"{batches.min}..{batches.max}, tuned for {batches.opt}"
                                                      if batches else f"{fixed} (fixed in the ONNX)"),
                                    "2:4 sparse layers": f"{sparse_layers} of {layers} weight layers; sparse kernels "
                                                         f"{'on' if sparse else 'off'}",
                                    "workspace": f"{p.workspace_mb} MiB"})
        built_here = p.build and not reason
        with Staging() as staging:
            # Files as the build reads them: the fp16 ONNX is still beside its final place.
            sources = {onnx_path.name: onnx_path}
            if p.precision == "fp16":  # what TensorRT 11, here or on the target, builds from
                sources[fp16_onnx.name] = staging.file(fp16_onnx)
                metrics["fp16_onnx"] = self.write_fp16_onnx(state, ctx, onnx_path, sources[fp16_onnx.name], fixed)
                metrics["fp16_onnx"]["file"] = str(fp16_onnx)
            # trtexec --int8 without this run's calibration would quantise blindly: that engine is built here only.
            scripts = {trtexec.CHECK_SCRIPT: trtexec.check_script(bundle)}
            if not calibrate:
                scripts[trtexec.BUILD_SCRIPT] = trtexec.build_script(bundle)
            for name, text in scripts.items():
                path = staging.file(ctx.run_dir / name)
                path.write_text(text)
                os.chmod(path, 0o755)
            staging.file(ctx.run_dir / trtexec.README).write_text(
                trtexec.readme(bundle, has_build_script=trtexec.BUILD_SCRIPT in scripts))
            metrics["bundle"] = str(ctx.run_dir)
            if built_here:
                metrics.update(self.build(state, ctx, staging, onnx_path, sources, plans[rt.installed_major()],
                                          batches, fixed, calibrate))
        # Everything is in place: the state names the files, relative to the run folder.
        if "fp16_onnx" in metrics:
            state.artifacts["onnx_fp16"] = fp16_onnx.name
        for name in (*scripts, trtexec.README):
            state.artifacts[name] = name
        if reason and p.build:
            return self.skip(metrics, reason, scripts)
        if not built_here:
            console.print(f"  bundle for the target device in {ctx.run_dir} (build: false): {self.on_target(scripts)}")
            return metrics
        state.artifacts["engine"] = p.filename
        return metrics

    def no_qdq(self, state, ctx) -> str:
        """What to do where int8 has no Q/DQ ONNX to build from and cannot calibrate here."""
        run = ctx.run_dir if (ctx.run_dir / RECIPE_FILE).is_file() else "RUN"
        missing = qdq_onnx(state.artifacts, ctx.run_dir)
        return (f"int8 builds from a Q/DQ ONNX made for TensorRT, and there is no {missing}: {rt.qdq_command(run)} "
                f"writes it (or run `{target_command(run, self.params)}` where TensorRT 8.6 "
                "or 10 calibrates it)")

    @staticmethod
    def float_onnx(state, ctx) -> Path:
        path = artifact_path(state.artifacts, "onnx", ctx.run_dir)
        if path is None:
            raise CompressorError(NEEDS_ONNX)
        if not path.is_file():
            raise CompressorError(f"export_tensorrt builds from the run's ONNX, and {path} is missing: "
                                  "put export_onnx before it")
        return path

    def batches(self, fixed: int | None) -> rt.BatchRange | None:
        """The profile, or None where the ONNX fixes the batch (and the parameters do not ask otherwise)."""
        p = self.params
        asked = {"min_batch", "opt_batch", "max_batch"} & p.model_fields_set
        if fixed is None:
            return rt.BatchRange(p.min_batch, p.opt_batch, p.max_batch)
        if asked and {p.min_batch, p.opt_batch, p.max_batch} != {fixed}:
            raise CompressorError(f"the ONNX's batch is fixed at {fixed}, so the engine's is too (asked for "
                                  f"{p.min_batch}/{p.opt_batch}/{p.max_batch}); re-export it with dynamic_batch: "
                                  "true, or ask for that batch")
        return None

    def tolerance(self) -> tuple[float, float]:
        atol, rtol = TOLERANCE[self.params.precision]
        return (atol if self.params.atol is None else self.params.atol,
                rtol if self.params.rtol is None else self.params.rtol)

    @staticmethod
    def on_target(scripts) -> str:
        steps = [f"bash {name}" for name in (trtexec.BUILD_SCRIPT, trtexec.CHECK_SCRIPT) if name in scripts]
        return f"copy it there and run {', then '.join(steps)} ({trtexec.README} says what was built)"

    def skip(self, metrics: dict, reason: str, scripts=()) -> dict:
        where = f"; wrote the bundle in {metrics['bundle']}: {self.on_target(scripts)}" if scripts else ""
        console.print(f"  [yellow]skipped:[/yellow] {reason}{where}")
        return {**metrics, "skipped": reason}

    def plan(self, major: int, onnx_file: str, fp16_onnx_file: str, sparse: bool, qdq: bool) -> rt.BuildPlan | str:
        """The plan for one major version, or why that version cannot build this precision."""
        try:
            return rt.plan_build(major, self.params.precision, sparse, onnx_file, fp16_onnx_file, self.params.dla_core,
                                 qdq)
        except CompressorError as e:
            return str(e)

    def write_fp16_onnx(self, state, ctx, onnx_path: Path, fp16_onnx: Path, fixed: int | None) -> dict:
        """Strongly typed TensorRT takes its precision from the ONNX: fp16 weights and math, fp32 at the edges."""
        model = copy.deepcopy(state.model).cpu().eval()
        ox.bake_masks(model, state.masks)
        ox.export(ox.HalfPrecision(model), state.input_shape, fp16_onnx, dynamic_batch=fixed is None,
                  static_batch=fixed or 1)
        ox.add_metadata(fp16_onnx, {**metadata(onnx_path), "precision": "fp16"})
        ox.check(fp16_onnx)
        inputs = first_batches(ctx.data.eval, self.params.parity_samples, fixed or 1)
        atol, rtol = TOLERANCE["fp16"]
        check = ox.compare(ox.run_onnx(onnx_path, inputs), ox.run_onnx(fp16_onnx, inputs), atol, rtol,
                           "fp16 ONNX", "the fp32 ONNX", "this model loses too much in fp16: use precision fp32")
        return {"file": str(fp16_onnx), **check}

    def build(self, state, ctx, staging: Staging, onnx_path: Path, sources: dict[str, Path],
              plan: rt.BuildPlan | str, batches: rt.BatchRange | None, fixed: int | None, calibrate: bool) -> dict:
        """Builds the engine aside and checks it against onnxruntime; it replaces the run folder's
        engine (and calibration cache) only when the with-block of `run` ends well."""
        p = self.params
        if isinstance(plan, str):
            raise CompressorError(plan)
        engine_path = ctx.run_dir / p.filename
        engine = staging.file(engine_path)
        calibration = cache = None
        if calibrate:  # at the profile's opt batch, from scratch: no stale cache
            per_batch = batches.opt if batches else fixed
            images = first_batches(ctx.data.decision_split(), p.calibration_samples, per_batch)  # scales are a choice
            calibration = list(images.split(per_batch))
            cache = staging.file(engine_path.with_suffix(".calibration.cache"))
        rt.build_engine(sources[plan.onnx_file], engine, plan, state.input_shape, batches, p.workspace_mb,
                        calibration, cache)
        atol, rtol = self.tolerance()
        chunk = batches.max if batches else fixed
        check = rt.engine_parity(engine, onnx_path, first_batches(ctx.data.eval, p.parity_samples, chunk), chunk,
                                 atol, rtol, dla_core=plan.dla_core)
        console.print(f"  {engine_path} (TensorRT {rt.installed_version()}, {p.precision}, flags "
                      f"{', '.join(plan.builder_flags) or 'none'}): matches onnxruntime within "
                      f"{check['max_abs_diff']:.2g}{ox.agreement_text(check)}")
        metrics = {"tensorrt": rt.installed_version(), "flags": list(plan.builder_flags), "onnx": plan.onnx_file,
                   "file": str(engine_path), "size_mb": round(engine.stat().st_size / 2**20, 3), **check}
        note = ox.degenerate_note(check, "onnxruntime")
        if note:
            console.print(f"  [yellow]note:[/yellow] {note}")
            metrics["note"] = note
        return metrics
