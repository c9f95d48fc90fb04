"""N:M semi-structured sparsity: at most N non-zeros in every group of M consecutive weights
along the input dimension (for a conv: along C at each output channel and kernel position,
the layout TensorRT and cuSPARSELt read). Masks, checks, an ONNX scan and the swap to
torch's sparse kernels."""

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from compressor.errors import CompressorError

PATTERNS = ("1:4", "2:4", "4:8")  # sparsest first: 1:4 implies 2:4, and 2:4 implies 4:8


def parse_pattern(pattern: str) -> tuple[int, int]:
    n, _, m = pattern.partition(":")
    if not (n.isdigit() and m.isdigit()) or not 0 < int(n) < int(m):
        raise CompressorError(f"N:M pattern '{pattern}' must look like 2:4 (N < M, both positive)")
    return int(n), int(m)


def _groups(weight: torch.Tensor, m: int) -> torch.Tensor:
    """(groups, m) view: dim 1 (input channels) moved last, so consecutive inputs share a group."""
    if weight.ndim < 2 or weight.shape[1] % m:
        raise CompressorError(
            f"weight of shape {tuple(weight.shape)} cannot be split into groups of {m} input channels: "
            f"its input dimension must be a multiple of {m}"
        )
    return weight.movedim(1, -1).reshape(-1, m)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """0/1 mask (weight's shape and dtype) keeping the n largest magnitudes of each group of m."""
    groups = _groups(weight.detach(), m)
    keep = groups.abs().topk(n, dim=1).indices
    mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
    moved = weight.movedim(1, -1).shape
    return mask.reshape(moved).movedim(-1, 1).contiguous()


def is_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of m consecutive input channels holds at most n non-zeros."""
    if weight.ndim < 2 or weight.shape[1] % m:
        return False
    return bool(((_groups(weight.detach(), m) != 0).sum(dim=1) <= n).all())


def sparsest_pattern(weight: torch.Tensor) -> str | None:
    for pattern in PATTERNS:
        if is_nm(weight, *parse_pattern(pattern)):
            return pattern
    return None


def _weight_axes(model) -> dict[str, tuple[str, int]]:
    """initializer name -> (op, axis of the input/reduction dimension) for Conv, Gemm, MatMul weights.
    In a Q/DQ ONNX a weight reaches its layer through DequantizeLinear: the int8 initializer behind
    it is the weight (same shape, and its zeros are the weight's: weights' zero points are 0)."""
    from onnx import helper

    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    axes = {}

    def weight(name: str, op: str, axis: int) -> None:
        axes[dequantized.get(name, name)] = (op, axis)

    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and len(node.input) > 1:
            weight(node.input[1], "Conv", 1)
        elif node.op_type == "Gemm":
            # Gemm computes A' @ B' with A' = A or Aᵀ, B' = B or Bᵀ; the reduced dimension is K.
            weight(node.input[0], "Gemm", 0 if attrs.get("transA", 0) else 1)
            weight(node.input[1], "Gemm", 1 if attrs.get("transB", 0) else 0)
        elif node.op_type == "MatMul":
            weight(node.input[0], "MatMul", -1)
            weight(node.input[1], "MatMul", -2)
    return axes


def onnx_nm_report(path: str | Path) -> list[dict]:
    """One row per Conv/Gemm/MatMul weight initializer of an ONNX file: name, op, shape,
    `nm` (the sparsest of 1:4, 2:4, 4:8 it satisfies, or None), `sparse_2_4` (what sparse
    tensor cores need) and `zeros` (fraction of exact zeros)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as e:  # a missing or corrupt file is the user's to fix
        raise CompressorError(f"cannot read ONNX model '{path}': {str(e).splitlines()[0]}") from None
    axes = _weight_axes(model)
    rows = []
    for init in model.graph.initializer:
        if init.name not in axes or len(init.dims) < 2:
            continue
        op, axis = axes[init.name]
        array = numpy_helper.to_array(init)
        weight = torch.from_numpy(array.astype(np.float32)).movedim(axis, 1)
        pattern = sparsest_pattern(weight)
        rows.append({"name": init.name, "op": op, "shape": list(array.shape), "nm": pattern,
                     "sparse_2_4": pattern in ("1:4", "2:4"), "zeros": float((array == 0).mean())})
    return rows


def _semi_structured_shape(weight: torch.Tensor) -> bool:
    """Whether torch's 2:4 kernel (the one to_sparse_semi_structured will pick) takes this shape."""
    from torch.sparse import SparseSemiStructuredTensor, SparseSemiStructuredTensorCUSPARSELT
    from torch.sparse import SparseSemiStructuredTensorCUTLASS

    kind = SparseSemiStructuredTensorCUTLASS if SparseSemiStructuredTensor._FORCE_CUTLASS \
        else SparseSemiStructuredTensorCUSPARSELT
    need = kind._DTYPE_SHAPE_CONSTRAINTS[weight.dtype]
    rows, cols = weight.shape
    return rows % need.sparse_min_rows == 0 and cols % need.sparse_min_cols == 0


def to_semi_structured(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Swaps, in place, every nn.Linear weight that is already 2:4 and has a shape the
    kernels take to torch.sparse.to_sparse_semi_structured. Needs the model on an Ampere or
    newer GPU in float16; returns the model and the names of the swapped layers."""
    from torch.sparse import to_sparse_semi_structured

    linears = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    for name, mod in linears:
        w = mod.weight
        if w.device.type != "cuda" or w.dtype != torch.float16:
            raise CompressorError(
                f"2:4 sparse kernels need the model on a CUDA GPU in float16 (model.half().cuda()); "
                f"layer '{name}' is {str(w.dtype).removeprefix('torch.')} on {w.device.type}"
            )
        if torch.cuda.get_device_capability(w.device) < (8, 0):
            raise CompressorError(f"2:4 sparse kernels need an Ampere or newer GPU; "
                                  f"{torch.cuda.get_device_name(w.device)} is older")
    swapped = []
    for name, mod in linears:
        if is_nm(mod.weight, 2, 4) and _semi_structured_shape(mod.weight):
            mod.weight = nn.Parameter(to_sparse_semi_structured(mod.weight.detach()), requires_grad=False)
            swapped.append(name)
    return model, swapped
