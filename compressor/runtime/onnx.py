"""ONNX export (dynamo first, TorchScript as a logged fallback), onnxruntime sessions, parity."""

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from compressor.console import console
from compressor.errors import CompressorError

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export(model: nn.Module, input_shape, path: Path, opset: int = 18, dynamic_batch: bool = True,
           dynamo: bool = True) -> str:
    """Writes `path` atomically and returns the exporter that succeeded."""
    model = model.eval().cpu()
    # Batch 2, not 1: torch.export specialises dimensions of size 1 and would freeze the batch.
    example = torch.randn(2, *input_shape)
    tmp = path.with_name(f".{path.name}.tmp")
    kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    used = "dynamo"
    try:
        if not dynamo:
            raise RuntimeError("dynamo exporter turned off in the recipe")
        shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=True, dynamic_shapes=shapes,
                              external_data=False, verbose=False, **kwargs)
    except Exception as e:
        if dynamo:
            console.print(f"  [yellow]dynamo exporter failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          "falling back to the TorchScript exporter[/yellow]")
        used = "torchscript"
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, dynamic_axes=axes, **kwargs)
    os.replace(tmp, path)
    return used


def session(path: Path, threads: int | None = None, providers: list[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Sessions that take turns on few cores would otherwise steal each other's time by spinning.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


@torch.no_grad()
def parity(model: nn.Module, path: Path, inputs: torch.Tensor, atol: float, rtol: float) -> dict:
    """Runs torch and onnxruntime on the same real inputs; a mismatch raises with its size."""
    expected = model.eval().cpu()(inputs.cpu()).numpy()
    got = session(path).run(None, {INPUT_NAME: inputs.cpu().numpy()})[0]
    if got.shape != expected.shape:
        raise CompressorError(f"ONNX output '{OUTPUT_NAME}' has shape {got.shape}, torch gives {expected.shape}")
    diff = np.abs(got - expected)
    worst = float(diff.max())
    if not np.allclose(got, expected, atol=atol, rtol=rtol):
        raise CompressorError(
            f"ONNX output '{OUTPUT_NAME}' differs from torch by up to {worst:.3g} "
            f"(atol {atol:g}, rtol {rtol:g}) on {len(inputs)} evaluation inputs; "
            "the export is wrong — try export_onnx with dynamo: false, or report the model"
        )
    agree = float((got.argmax(1) == expected.argmax(1)).mean())
    return {"max_abs_diff": worst, "top1_agreement": agree, "samples": len(inputs)}
