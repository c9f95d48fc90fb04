"""Post-training static INT8: per-channel symmetric weights and per-tensor activations calibrated
on real training batches, written as a Q/DQ ONNX by onnxruntime.quantization, then measured
in onnxruntime against the float ONNX: the task's metric on the evaluation split, file size,
and latency side by side. After a qat pass it quantises the fine-tuned model the same way."""

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from compressor.console import console
from compressor.errors import CompressorError
from compressor.files import Staging
from compressor.passes import Pass, register_pass
from compressor.quantization.calibration import calibration_batches
from compressor.quantization.onnx_int8 import count_ops, int8_weights, quantize, weight_nodes
from compressor.quantization.plan import plan_layers
from compressor.quantization.scheme import SCHEMES
from compressor.runtime import onnx as ox
from compressor.runtime.backends import Candidate, Settings
from compressor.runtime.compare import measure
from compressor.schema import PassParams, PlainName

FLOAT_ONNX = "model.fp32.onnx"  # the float export it quantised, kept in the pass folder for comparison
INT8_ONNX = "model.int8.onnx"
# The Q/DQ file says which runtime its activations were made for: export_tensorrt reads it there,
# as the file may reach it without this run's checkpoint (`compress export --format onnx --int8`).
TARGET_KEY = "int8_target"


class QuantizeParams(PassParams):
    type: Literal["quantize"] = "quantize"
    target: Literal["onnxruntime", "tensorrt"] = Field(
        "onnxruntime", description="onnxruntime: uint8 activations with a zero point (the CPU's fast int8 "
                                   "kernels) | tensorrt: symmetric int8 activations (explicit quantisation)")
    method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="activation range calibration")
    calibration_batches: int = Field(8, gt=0, description="training batches the ranges are calibrated on")
    keep_float: list[str] = Field([], description="layers left in fp32, as module-name globs: [conv1, fc, 'head.*']")
    keep_float_error: float | None = Field(
        None, gt=0, description="also leave in fp32 every layer whose error alone (relative error of the model's "
                                "outputs with only that layer INT8) is above this, e.g. 0.05")
    error_samples: int = Field(64, ge=0, description="calibration images the per-layer error is measured on; 0 "
                                                     "skips it")
    evaluate: bool = Field(True, description="the task's metric of the float and the INT8 ONNX in onnxruntime")
    batch_sizes: list[int] = Field([1, 32], description="onnxruntime latency of float vs INT8 ONNX, interleaved; "
                                                        "[] for none")
    threads: int = Field(1, gt=0, description="onnxruntime threads for the latency")
    opset: int = Field(18, ge=13, description="ONNX opset (per-channel Q/DQ needs 13)")
    filename: PlainName = Field(INT8_ONNX, description="written into the run folder")

    @model_validator(mode="after")
    def error_is_measured(self):
        if self.keep_float_error is not None and self.error_samples == 0:
            raise ValueError("keep_float_error needs the per-layer error: set error_samples above 0")
        return self


def show_plan(rows: list[dict]) -> None:
    for r in rows:
        error = "" if r["error"] is None else f"error {r['error']:.3g}"
        console.print(f"  {r['layer']:24s} {r['type']:8s} {r['precision']}  {error}"
                      + (f" ({r['why']})" if r["why"] else ""), highlight=False)


def masks_survive(path, masks: dict[str, torch.Tensor]) -> bool:
    """Whether every masked weight is an exact 0 in the Q/DQ ONNX (zero points of weights are 0)."""
    weights = int8_weights(path)
    for key, mask in masks.items():
        module = key.removesuffix(".weight")
        if module in weights and np.any(weights[module][mask.cpu().numpy() == 0]):
            return False
    return True


@register_pass
class Quantize(Pass):
    """Post-training static INT8 as a Q/DQ ONNX (onnxruntime.quantization), measured in onnxruntime."""

    Params = QuantizeParams

    def run(self, state, ctx) -> dict:
        p = self.params
        scheme = SCHEMES[p.target]
        model = state.model.cpu().eval()
        ox.bake_masks(model, state.masks)
        batches = calibration_batches(ctx.data.train, p.calibration_batches, state.input_shape)
        rows = plan_layers(model, p.keep_float, p.keep_float_error, p.error_samples, batches, scheme)
        show_plan(rows)
        path, fp32 = ctx.run_dir / p.filename, ctx.pass_dir / FLOAT_ONNX
        with Staging() as staging:
            tmp = staging.file(path)
            ox.export(model, state.input_shape, fp32, p.opset, output_name=ctx.task.output_name)
            ox.simplify(fp32)
            nodes = weight_nodes(fp32)
            missing = [r["layer"] for r in rows if r["precision"] == "fp32" and r["layer"] not in nodes]
            if missing:
                raise CompressorError(f"keep_float: {', '.join(missing[:3])} cannot be found in the exported ONNX "
                                      "(its weight is not a named initializer there); keep other layers float")
            float_nodes = [nodes[r["layer"]] for r in rows if r["precision"] == "fp32"]
            quantize(fp32, tmp, batches, p.method, scheme, float_nodes)
            ox.add_metadata(tmp, {TARGET_KEY: p.target})
            ox.check(tmp)
            ops = count_ops(tmp, ("QuantizeLinear", "DequantizeLinear"))
            kept = masks_survive(tmp, state.masks)
            if not kept:
                raise CompressorError("a masked weight is not zero in the Q/DQ ONNX; report the model")
            metrics = {"target": p.target, "activations": scheme.activations, "method": p.method,
                       "calibration_images": sum(len(b) for b in batches), "layers": rows,
                       "int8_layers": sum(r["precision"] == "int8" for r in rows),
                       "float_layers": [r["layer"] for r in rows if r["precision"] == "fp32"], **ops,
                       "masks_kept": True if state.masks else None, "file": str(path),
                       "size_mb": round(tmp.stat().st_size / 2**20, 3),
                       "fp32_size_mb": round(fp32.stat().st_size / 2**20, 3)}
            if p.evaluate:
                metrics.update(self.accuracy(tmp, fp32, ctx))
            if p.batch_sizes:
                metrics["onnx_latency"] = self.latency(tmp, fp32, state, ctx)
        state.artifacts["onnx_int8"] = p.filename
        console.print(f"  {path} ({metrics['size_mb']} MB, fp32 {metrics['fp32_size_mb']} MB): "
                      f"{metrics['int8_layers']}/{len(rows)} layers INT8, {ops['QuantizeLinear']} QuantizeLinear")
        return metrics

    @staticmethod
    def accuracy(int8, fp32, ctx) -> dict:
        """The metric of both ONNX files run by onnxruntime; the pass's own metric is the INT8 one's."""
        cpu, key = torch.device("cpu"), ctx.task.metric
        float_metrics = ctx.task.evaluate(ox.OnnxForward(fp32), ctx.data.eval, cpu, desc="evaluate fp32 ONNX")
        int8_metrics = ctx.task.evaluate(ox.OnnxForward(int8), ctx.data.eval, cpu, desc="evaluate INT8 ONNX")
        drop = float_metrics[key] - int8_metrics[key]
        console.print(f"  {ctx.task.metric_label} in onnxruntime: fp32 {float_metrics[key]:.2f}, INT8 "
                      f"{int8_metrics[key]:.2f} ({-drop:+.2f})")
        return {**int8_metrics, "fp32_onnx": float_metrics, "drop": drop}

    def latency(self, int8, fp32, state, ctx) -> list[dict]:
        p = self.params
        settings = Settings(threads=p.threads, device=torch.device("cpu"), workdir=ctx.pass_dir)
        rows, _ = measure([Candidate("fp32 ONNX", onnx=fp32), Candidate("INT8 ONNX", onnx=int8)], ["onnxruntime"],
                          p.batch_sizes, settings, state.input_shape, warmup=3, iters=20, duration_s=None)
        return [{k: r[k] for k in ("backend", "device", "threads", "batch_size", "baseline_ms", "compressed_ms",
                                   "speedup", "speedup_iqr")} for r in rows]
