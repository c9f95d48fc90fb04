"""The per-layer plan both INT8 passes follow: each quantisable layer, its measured error alone,
and whether it runs in INT8 or stays float (named by keep_float, or its error above
keep_float_error). QAT fake-quantises exactly the layers the quantize pass will."""

import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.quantization.layers import kept_by_globs, quantisable_layers
from compressor.quantization.scheme import Scheme
from compressor.quantization.sensitivity import layer_errors


def plan_layers(model: nn.Module, keep_float: list[str], keep_float_error: float | None, error_samples: int,
                batches: list[torch.Tensor], scheme: Scheme) -> list[dict]:
    layers = quantisable_layers(model)
    named = kept_by_globs(model, layers, keep_float)
    errors = (layer_errors(model, list(layers), torch.cat(batches)[:error_samples], scheme)
              if error_samples or keep_float_error is not None else {})
    rows = []
    for name, module in layers.items():
        error = errors.get(name)
        why = ("keep_float" if name in named else
               "error above keep_float_error" if keep_float_error is not None and error > keep_float_error else None)
        rows.append({"layer": name, "type": type(module).__name__, "error": error,
                     "precision": "fp32" if why else "int8", "why": why})
    if all(r["precision"] == "fp32" for r in rows):
        raise CompressorError(f"every quantisable layer ({len(rows)}) stays float, so nothing would run in INT8: "
                              "narrow keep_float or raise keep_float_error")
    return rows


def int8_layers(rows: list[dict]) -> list[str]:
    return [r["layer"] for r in rows if r["precision"] == "int8"]
