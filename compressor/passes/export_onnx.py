"""ONNX export, checked by onnx.checker and by onnxruntime against torch on real inputs."""

import json
from pathlib import Path

import onnx
import torch
from pydantic import Field

from compressor.errors import CompressorError
from compressor.passes import Pass, register_pass
from compressor.recipe import PassParams
from compressor.runtime import onnx as ox


class ExportOnnxParams(PassParams):
    opset: int = Field(18, ge=13, description="ONNX opset")
    dynamic_batch: bool = Field(True, description="batch dimension left free")
    dynamo: bool = Field(True, description="use the dynamo exporter (falls back to TorchScript)")
    atol: float = Field(1e-4, ge=0, description="parity tolerance against torch")
    rtol: float = Field(1e-3, ge=0)
    parity_samples: int = Field(64, gt=0, description="evaluation inputs compared")
    filename: str = "model.onnx"


def first_inputs(loader, n: int) -> torch.Tensor:
    batches, count = [], 0
    for inputs, _ in loader:
        batches.append(inputs)
        count += len(inputs)
        if count >= n:
            break
    return torch.cat(batches)[:n]


def add_metadata(path: Path, meta: dict) -> None:
    model = onnx.load(str(path))
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    onnx.save(model, str(path))


@register_pass("export_onnx")
class ExportOnnx(Pass):
    """ONNX export with a full onnx.checker check and onnxruntime-vs-torch parity on real inputs."""

    Params = ExportOnnxParams

    def run(self, state, ctx):
        p = self.params
        path = ctx.run_dir / p.filename
        model = state.model.cpu().eval()
        exporter = ox.export(model, state.input_shape, path, p.opset, p.dynamic_batch, p.dynamo)
        add_metadata(path, {"recipe": ctx.recipe.name, "input_name": ox.INPUT_NAME,
                            "input_shape": ["batch" if p.dynamic_batch else 1, *state.input_shape],
                            "num_classes": ctx.data.num_classes, "preprocessing": ctx.data.preprocessing})
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except onnx.checker.ValidationError as e:
            raise CompressorError(f"onnx.checker rejects {path}: {str(e).splitlines()[0]}") from None
        check = ox.parity(model, path, first_inputs(ctx.data.eval, p.parity_samples), p.atol, p.rtol)
        state.artifacts["onnx"] = str(path)
        ctx.metrics.update(exporter=exporter, opset=p.opset, file=str(path),
                           size_mb=round(path.stat().st_size / 2**20, 3), **check)
        return state
