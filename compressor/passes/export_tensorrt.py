"""TensorRT engine from the run's ONNX where TensorRT and an NVIDIA GPU are present; elsewhere a
build_engine.sh with the exact trtexec command for the target device (engines are device-specific).
The files it writes (fp16 ONNX, script, engine) are built aside and replace the run folder's only
once the pass's checks passed."""

import copy
from pathlib import Path
from typing import Literal

import onnx
from pydantic import Field, model_validator

from compressor.console import console
from compressor.errors import CompressorError
from compressor.files import Staging
from compressor.passes import Pass, register_pass
from compressor.passes.export_onnx import first_inputs
from compressor.runtime import onnx as ox
from compressor.runtime import tensorrt as rt
from compressor.schema import PassParams, PlainName
from compressor.state import artifact_path

# Logit tolerances against onnxruntime: TF32 convolutions by default in fp32, then fp16, then int8.
TOLERANCE = {"fp32": (1e-2, 1e-2), "fp16": (5e-2, 5e-2), "int8": (0.5, 0.1)}
SCRIPT = "build_engine.sh"


class ExportTensorRTParams(PassParams):
    type: Literal["export_tensorrt"] = "export_tensorrt"
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", description="TensorRT 10: builder flags; 11: fp16 comes from an fp16 ONNX written beside the "
                            "ONNX; int8 needs TensorRT 10 here to calibrate on evaluation images")
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
    calibration_samples: int = Field(512, gt=0, description="int8: evaluation images that set the scales")
    required: bool = Field(False, description="fail, instead of writing build_engine.sh, where TensorRT or a GPU "
                                              "is missing")
    filename: PlainName = Field("model.engine", description="written into the run folder")

    @model_validator(mode="after")
    def _batches_in_order(self):
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"needs min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, "
                             f"{self.max_batch}")
        return self


def two_four_layers(path: Path) -> tuple[int, int]:
    """(layers whose weights are 2:4, weight layers) in the ONNX, as TensorRT will see them."""
    from compressor.sparsity.nm import onnx_nm_report

    rows = onnx_nm_report(path)
    return sum(row["sparse_2_4"] for row in rows), len(rows)


def fixed_batch(path: Path) -> int | None:
    """The ONNX's batch size, or None where the batch is dynamic."""
    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def parity_inputs(ctx, samples: int, multiple: int):
    """Real evaluation images, a whole number of `multiple`-sized batches."""
    images = first_inputs(ctx.data.eval, max(samples, multiple))
    return images[: len(images) // multiple * multiple]


@register_pass
class ExportTensorRT(Pass):
    """TensorRT engine checked against onnxruntime; build_engine.sh for the target where TensorRT is absent.

    TensorRT 10.x and 11.x are both handled, by the installed version here and by the target's
    trtexec version in the script."""

    Params = ExportTensorRTParams

    def run(self, state, ctx) -> dict:
        p = self.params
        onnx_path = artifact_path(state.artifacts, "onnx", ctx.run_dir)
        if onnx_path is None:
            raise CompressorError("export_tensorrt builds from the run's ONNX: put export_onnx before it")
        if not onnx_path.is_file():
            raise CompressorError(f"export_tensorrt builds from the run's ONNX, and {onnx_path} is missing: "
                                  "put export_onnx before it")
        fixed = fixed_batch(onnx_path)
        batches = None if fixed else rt.BatchRange(p.min_batch, p.opt_batch, p.max_batch)
        sparse_layers, layers = two_four_layers(onnx_path)
        sparse = sparse_layers > 0 if p.sparse_weights is None else p.sparse_weights
        reason = rt.unavailable_reason()
        if reason and p.required:
            raise CompressorError(f"required: true, but {reason}; run where an NVIDIA GPU and TensorRT 10 or 11 are, "
                                  f"or drop required to get {SCRIPT} for the target device")
        metrics = {"precision": p.precision, "sparse_weights": sparse, "two_four_layers": f"{sparse_layers}/{layers}",
                   "batches": [batches.min, batches.opt, batches.max] if batches else [fixed] * 3}
        if reason and p.precision == "int8":
            return self.skip(metrics, f"{reason}; int8 calibrates with TensorRT 10 on the target: "
                                         "run `compress export RUN --format engine` there")
        fp16_onnx = onnx_path.with_name(Path(onnx_path.name).with_suffix(".fp16.onnx").name)
        plans = {major: self.plan(major, onnx_path.name, fp16_onnx.name, sparse) for major in rt.SUPPORTED_MAJORS}
        with Staging() as staging:
            # Files as the build reads them: the fp16 ONNX is still beside its final place.
            sources = {onnx_path.name: onnx_path}
            if p.precision == "fp16":  # what TensorRT 11, here or on the target, builds from
                sources[fp16_onnx.name] = staging.file(fp16_onnx)
                metrics["fp16_onnx"] = self.write_fp16_onnx(state, ctx, onnx_path, sources[fp16_onnx.name], fixed)
                metrics["fp16_onnx"]["file"] = str(fp16_onnx)
            if p.precision != "int8":  # trtexec --int8 without this run's calibration would quantise blindly
                shape = f"batch {batches.min}..{batches.max} tuned for {batches.opt}" if batches else f"batch {fixed}"
                rt.write_build_script(staging.file(ctx.run_dir / SCRIPT), plans, p.filename, state.input_shape,
                                      batches, f"precision {p.precision}, 2:4 sparse kernels "
                                               f"{'on' if sparse else 'off'}, {shape}.")
                metrics["script"] = str(ctx.run_dir / SCRIPT)
            if not reason:
                metrics.update(self.build(state, ctx, staging, onnx_path, sources, plans[rt.installed_major()],
                                          batches, fixed))
        # Everything is in place: the state names the files, relative to the run folder.
        if "fp16_onnx" in metrics:
            state.artifacts["onnx_fp16"] = fp16_onnx.name
        if "script" in metrics:
            state.artifacts[SCRIPT] = SCRIPT
        if reason:
            return self.skip(metrics, reason)
        state.artifacts["engine"] = p.filename
        return metrics

    @staticmethod
    def skip(metrics: dict, reason: str) -> dict:
        where = f"; wrote {metrics['script']}: run it on the target device" if "script" in metrics else ""
        console.print(f"  [yellow]skipped:[/yellow] {reason}{where}")
        return {**metrics, "skipped": reason}

    def plan(self, major: int, onnx_file: str, fp16_onnx_file: str, sparse: bool) -> rt.BuildPlan | str:
        """The plan for one major version, or why that version cannot build this precision."""
        try:
            return rt.plan_build(major, self.params.precision, sparse, onnx_file, fp16_onnx_file)
        except CompressorError as e:
            return str(e)

    def write_fp16_onnx(self, state, ctx, onnx_path: Path, fp16_onnx: Path, fixed: int | None) -> dict:
        """Strongly typed TensorRT takes its precision from the ONNX: fp16 weights and math, fp32 at the edges."""
        model = copy.deepcopy(state.model).cpu().eval()
        ox.bake_masks(model, state.masks)
        ox.export(ox.HalfPrecision(model), state.input_shape, fp16_onnx, dynamic_batch=fixed is None,
                  static_batch=fixed or 1)
        meta = {prop.key: prop.value for prop in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
        ox.add_metadata(fp16_onnx, {**meta, "precision": "fp16"})
        ox.check(fp16_onnx)
        inputs = parity_inputs(ctx, self.params.parity_samples, fixed or 1)
        atol, rtol = TOLERANCE["fp16"]
        check = ox.compare(ox.run_onnx(onnx_path, inputs), ox.run_onnx(fp16_onnx, inputs), atol, rtol,
                           "fp16 ONNX", "the fp32 ONNX", "this model loses too much in fp16: use precision fp32")
        return {"file": str(fp16_onnx), **check}

    def build(self, state, ctx, staging: Staging, onnx_path: Path, sources: dict[str, Path],
              plan: rt.BuildPlan | str, batches: rt.BatchRange | None, fixed: int | None) -> dict:
        """Builds the engine aside and checks it against onnxruntime; it replaces the run folder's
        engine (and calibration cache) only when the with-block of `run` ends well."""
        p = self.params
        if isinstance(plan, str):
            raise CompressorError(plan)
        engine_path = ctx.run_dir / p.filename
        engine = staging.file(engine_path)
        calibration = cache = None
        if p.precision == "int8":  # calibration runs at the profile's opt batch, from scratch: no stale cache
            per_batch = batches.opt if batches else fixed
            calibration = list(parity_inputs(ctx, p.calibration_samples, per_batch).split(per_batch))
            cache = staging.file(engine_path.with_suffix(".calibration.cache"))
        rt.build_engine(sources[plan.onnx_file], engine, plan, state.input_shape, batches, p.workspace_mb,
                        calibration, cache)
        atol, rtol = TOLERANCE[p.precision]
        chunk = batches.max if batches else fixed
        check = rt.engine_parity(engine, onnx_path, parity_inputs(ctx, p.parity_samples, chunk), chunk,
                                 atol if p.atol is None else p.atol, rtol if p.rtol is None else p.rtol)
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
