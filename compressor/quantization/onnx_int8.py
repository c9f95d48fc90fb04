"""The Q/DQ ONNX, made by onnxruntime.quantization's static quantiser from the float ONNX: the
scheme's types, per-channel weights, calibration by minmax, entropy or percentile, and the
float layers left out by their ONNX node."""

import contextlib
import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from compressor.errors import CompressorError
from compressor.quantization.calibration import BatchReader
from compressor.quantization.scheme import Scheme

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def weight_nodes(path: Path) -> dict[str, str]:
    """Module name -> ONNX node name of each weight layer. Both exporters keep a parameter's name
    on its initializer (onnxslim too, when it folds a BatchNorm into the conv), which is how a
    torch layer is found in the graph."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    found = {}
    for node in graph.node:
        if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in weights:
            module, _, leaf = node.input[1].rpartition(".")
            if leaf == "weight":
                found[module] = node.name
    return found


@contextlib.contextmanager
def quiet_quantiser():
    # It warns on the root logger that no pre-processing ran: onnxslim already folded the graph.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize(fp32: Path, out: Path, batches: list[torch.Tensor], method: str, scheme: Scheme,
             float_nodes: list[str]) -> None:
    activation = QuantType.QInt8 if scheme.symmetric else QuantType.QUInt8
    try:
        with quiet_quantiser():
            quantize_static(str(fp32), str(out), BatchReader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=activation, weight_type=QuantType.QInt8, calibrate_method=METHODS[method],
                            nodes_to_exclude=float_nodes,
                            extra_options={"ActivationSymmetric": scheme.symmetric, "WeightSymmetric": True})
    except Exception as e:  # an op its calibration or its quantiser cannot handle
        raise CompressorError(f"onnxruntime.quantization cannot quantise the model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else 'no message'}); keep the layers "
                              "around that op float (keep_float), or report the model") from None


def int8_weights(path: Path) -> dict[str, np.ndarray]:
    """Module name -> its int8 weight in the Q/DQ ONNX (the quantiser names them `<param>_quantized`)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    suffix = ".weight_quantized"
    return {t.name[: -len(suffix)]: numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith(suffix)}


def count_ops(path: Path, ops: tuple[str, ...]) -> dict[str, int]:
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return {op: sum(n.op_type == op for n in nodes) for op in ops}
