"""Which layers take an N:M mask, and why the others do not: shared by the semi_structured
pass and by SR-STE training (sparse_train method nm)."""

from typing import Literal

import torch.nn as nn
from pydantic import Field

from compressor.errors import CompressorError
from compressor.pruning.graph import match_modules
from compressor.schema import PassParams
from compressor.sparsity.nm import parse_pattern

# NVIDIA's ASP (apex.contrib.sparsity) skips weights whose sparse tensor-core GEMM would not
# tile: outputs a multiple of 8 and inputs a multiple of 16 (for a conv, K and C).
TENSOR_CORE_OUT, TENSOR_CORE_IN = 8, 16


class NMParams(PassParams):
    pattern: Literal["2:4", "1:4", "4:8"] = Field("2:4", description="keep N weights in every M consecutive inputs")
    layers: list[str] = Field(["*"], description="module-name globs of the Linear/Conv2d layers to make sparse")
    ignore: list[str] = Field(default_factory=list, description="module-name globs left dense")
    tensor_core_shapes: bool = Field(True, description="only layers sparse tensor cores can run "
                                     "(outputs a multiple of 8, inputs of 16)")

    @property
    def nm(self) -> tuple[int, int]:
        return parse_pattern(self.pattern)


def skip_reason(module: nn.Module, m: int, tensor_core_shapes: bool) -> str | None:
    outputs, inputs = module.weight.shape[:2]  # Conv2d: (K, C/groups, kh, kw); Linear: (out, in)
    kind = "input channel" if isinstance(module, nn.Conv2d) else "input"
    kind += "s" * (inputs != 1)
    if inputs % m:
        return f"{inputs} {kind}, not a multiple of {m}"
    if tensor_core_shapes and (outputs % TENSOR_CORE_OUT or inputs % TENSOR_CORE_IN):
        return (f"{outputs} outputs × {inputs} {kind}: sparse tensor cores need outputs a multiple of "
                f"{TENSOR_CORE_OUT} and inputs of {TENSOR_CORE_IN} (tensor_core_shapes: false masks it anyway)")
    return None


def select_layers(model: nn.Module, p: NMParams, already=()) -> tuple[dict[str, nn.Module], list[dict]]:
    """(name -> layer to mask, [{layer, reason}] for every selected Linear/Conv2d left dense);
    `already` names parameters masked by an earlier pass, whose masks stay as they are.
    A glob selects the modules it names and everything inside them."""
    wanted = match_modules(model, p.layers, "layers")
    unwanted = match_modules(model, p.ignore, "ignore")
    chosen, skipped = {}, []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or name not in wanted or name in unwanted:
            continue
        reason = ("keeps the mask an earlier pass gave it" if weight_key(name) in already
                  else skip_reason(module, p.nm[1], p.tensor_core_shapes))
        if reason:
            skipped.append({"layer": name, "reason": reason})
        else:
            chosen[name] = module
    if not chosen:
        reasons = "; ".join(f"{s['layer']}: {s['reason']}" for s in skipped[:3]) or "no Linear/Conv2d layer matched"
        raise CompressorError(f"pattern {p.pattern} fits none of the selected layers ({reasons})")
    return chosen, skipped


def weight_key(layer: str) -> str:
    """The parameter name under which a layer's mask is kept in State.masks."""
    return f"{layer}.weight" if layer else "weight"
