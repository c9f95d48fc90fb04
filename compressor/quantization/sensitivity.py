"""Per-layer INT8 error: each layer alone fake-quantised with the scheme, the model's outputs
compared with its float outputs on calibration images. A layer whose error stands out is the
one to keep float (the partial quantisation of Wu et al. 2020, "Integer Quantization for Deep Learning
Inference")."""

import torch
import torch.nn as nn
from torch.utils._pytree import tree_leaves

from compressor.quantization.fake_quant import FakeQuant
from compressor.quantization.scheme import Scheme


def relative_error(got, want) -> float:
    """‖got − want‖ / ‖want‖ over every tensor of the outputs (logits, or a detector's maps)."""
    pairs = [(g.float(), w.float()) for g, w in zip(tree_leaves(got), tree_leaves(want)) if torch.is_tensor(w)]
    diff = sum(float((g - w).pow(2).sum()) for g, w in pairs)
    norm = sum(float(w.pow(2).sum()) for _, w in pairs)
    return (diff / max(norm, 1e-30)) ** 0.5


@torch.no_grad()
def layer_errors(model: nn.Module, layers: list[str], inputs: torch.Tensor, scheme: Scheme) -> dict[str, float]:
    model.eval()
    reference = model(inputs)
    errors = {}
    for name in layers:
        term = FakeQuant([name], scheme)
        term.attach(model)
        try:
            errors[name] = relative_error(model(inputs), reference)
        finally:
            term.detach()
    return errors
