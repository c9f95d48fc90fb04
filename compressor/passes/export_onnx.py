"""ONNX export, checked by onnx.checker and by onnxruntime against torch on real inputs. The
export is built beside the run folder's ONNX and replaces it only once every check passed."""

from typing import Literal

import torch
from pydantic import Field

from compressor.console import console
from compressor.errors import CompressorError
from compressor.files import Staging
from compressor.passes import Pass, register_pass
from compressor.runtime import onnx as ox
from compressor.schema import PassParams, PlainName


class ExportOnnxParams(PassParams):
    type: Literal["export_onnx"] = "export_onnx"
    opset: int = Field(18, ge=13, description="ONNX opset")
    dynamic_batch: bool = Field(True, description="batch dimension left free")
    batch_size: int = Field(1, gt=0, description="the fixed batch when dynamic_batch is false")
    dynamo: bool = Field(True, description="use the dynamo exporter (falls back to TorchScript, with a note)")
    simplify: bool = Field(True, description="fold constants and fuse nodes with onnxslim")
    atol: float = Field(1e-4, ge=0, description="parity tolerance against torch (absolute; times the largest "
                                                "output where that is below 1)")
    rtol: float = Field(1e-3, ge=0, description="parity tolerance against torch (relative)")
    parity_samples: int = Field(64, gt=0, description="evaluation inputs compared")
    filename: PlainName = Field("model.onnx", description="written into the run folder")


def first_inputs(loader, n: int) -> torch.Tensor:
    batches, count = [], 0
    for inputs, _ in loader:
        batches.append(inputs)
        count += len(inputs)
        if count >= n:
            break
    return torch.cat(batches)[:n]


@register_pass
class ExportOnnx(Pass):
    """ONNX export with a full onnx.checker check and onnxruntime-vs-torch parity on real inputs."""

    Params = ExportOnnxParams

    def run(self, state, ctx) -> dict:
        p = self.params
        path = ctx.run_dir / p.filename
        model = state.model.cpu().eval()
        ox.bake_masks(model, state.masks)
        with Staging() as staging:
            tmp = staging.file(path)
            exporter = ox.export(model, state.input_shape, tmp, p.opset, p.dynamic_batch, p.dynamo, p.batch_size,
                                 ctx.task.output_name)
            if p.simplify:
                try:
                    ox.simplify(tmp)
                except Exception as e:  # onnxslim meets graphs it cannot rewrite; the export itself is fine
                    raise CompressorError(f"onnxslim cannot simplify {path} ({type(e).__name__}: "
                                          f"{str(e).splitlines()[0][:120]}); set simplify: false") from None
            ox.add_metadata(tmp, {
                "recipe": ctx.recipe.name, "input_name": ox.INPUT_NAME, "output_name": ctx.task.output_name,
                "input_shape": ["batch" if p.dynamic_batch else p.batch_size, *state.input_shape],
                "num_classes": ctx.data.num_classes, "preprocessing": ctx.data.preprocessing,
                "model_source": state.source["source"], "task": ctx.task.name, **ctx.task.metadata(ctx.data),
            })
            ox.check(tmp)
            inputs = first_inputs(ctx.data.eval, max(p.parity_samples, p.batch_size))
            if not p.dynamic_batch:  # a fixed-batch model is fed whole batches only
                inputs = inputs[: len(inputs) // p.batch_size * p.batch_size]
            check = ctx.task.parity(model, tmp, inputs, p.atol, p.rtol, ctx.data)
            size_mb = round(tmp.stat().st_size / 2**20, 3)
        state.artifacts["onnx"] = p.filename
        console.print(f"  {path} ({exporter} exporter, {size_mb} MB): onnxruntime matches torch "
                      f"within {check['max_abs_diff']:.2g} on {check['samples']} evaluation inputs")
        metrics = {"exporter": exporter, "opset": p.opset, "dynamic_batch": p.dynamic_batch,
                   "simplified": p.simplify, "file": str(path), "size_mb": size_mb, **check}
        note = ox.degenerate_note(check, "torch")
        if note:
            console.print(f"  [yellow]note:[/yellow] {note}")
            metrics["note"] = note
        return metrics
