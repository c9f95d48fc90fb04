"""The model-zoo check behind docs/pruning.md and tests/test_prune_zoo.py: a torchvision
classifier pruned at one ratio (whole heads in transformers) must run, lose MACs, export to
ONNX and agree with onnxruntime; or fail with a CompressorError that says why."""

import time
from pathlib import Path

import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.models import build_model
from compressor.inputs import example_input
from compressor.measure import count_macs_params
from compressor.pruning.attention import attention_heads
from compressor.pruning.engine import Plan, prune_step
from compressor.pruning.graph import survey
from compressor.runtime import onnx as ox

# The list; transformers take their image size as an argument, CNNs any input.
MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf",
          "convnext_tiny", "densenet121", "shufflenet_v2_x1_0", "squeezenet1_1", "vit_b_16", "swin_t"]


def build(name: str, size: int) -> nn.Module:
    """An untrained model whose outputs are far from zero, so that an export bug would show:
    torchvision zero-initialises some classifiers, and untrained BatchNorm statistics let
    activations fade through deep networks."""
    model = build_model(f"torchvision:{name}", {"num_classes": 10, **({"image_size": size} if "vit" in name else {})})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.02)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the calibration batches
        model.train()(torch.randn(8, 3, size, size))
    return model.eval()


def heads(model: nn.Module) -> int:
    return sum(attention_heads(model).values())


def check(name: str, size: int, ratio: float, workdir: Path) -> dict:
    """One row of the sweep: what pruning `name` at `ratio` did, or the error that stopped it."""
    torch.manual_seed(0)
    model, shape = build(name, size), (3, size, size)
    example = example_input(shape)
    macs, params = count_macs_params(model, example)
    row = {"model": name, "input": f"{size}×{size}", "heads_before": heads(model)}
    start = time.perf_counter()
    try:
        prune_step(model, example, Plan(), ratio, survey(model, example))
        pruned_macs, pruned_params = count_macs_params(model, example)
        path = workdir / f"{name}.onnx"
        exporter = ox.export(model, shape, path)
        # The export's own rule: atol 1e-4, scaled down with outputs smaller than 1 (onnx.effective_atol).
        agreement = ox.parity(model, path, torch.randn(4, *shape), atol=1e-4, rtol=1e-3)
    except CompressorError as e:
        return {**row, "ok": False, "error": str(e), "seconds": time.perf_counter() - start}
    return {**row, "ok": True, "macs_kept": pruned_macs / macs, "params_kept": pruned_params / params,
            "heads_after": heads(model), "exporter": exporter, "max_abs_diff": agreement["max_abs_diff"],
            "output_scale": agreement["output_scale"], "degenerate": agreement["degenerate"],
            "seconds": time.perf_counter() - start}
