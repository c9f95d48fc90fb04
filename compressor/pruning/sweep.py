"""The model-zoo check behind docs/pruning.md, tests/test_prune_zoo.py and tests/test_prune_timm.py:
a torchvision or timm classifier pruned at one ratio (whole heads in transformers) must run,
lose MACs, rebuild from its pruning history, export to ONNX and agree with onnxruntime; or
fail with a CompressorError that says why. Where the error names layers to ignore, the check
prunes again with them ignored."""

import time
from pathlib import Path

import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.inputs import example_input
from compressor.measure import count_macs_params
from compressor.models import build_model
from compressor.pruning.attention import attention_heads
from compressor.pruning.engine import Plan, replay
from compressor.pruning.graph import match_modules, survey
from compressor.pruning.inspection import BreakingGroups
from compressor.pruning.leftovers import drop_autograd_history
from compressor.pruning.targets import prune_copy
from compressor.runtime import onnx as ox

# The issue's torchvision list; its transformers take their image size as an argument, CNNs any input.
MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf",
          "convnext_tiny", "densenet121", "shufflenet_v2_x1_0", "squeezenet1_1", "vit_b_16", "swin_t"]
# timm's, each at the smallest input it takes (transformers get it as img_size); EfficientFormer's
# attention is fixed to the 7×7 map of a 224×224 input.
TIMM_MODELS = {"timm:resnet50d": 32, "timm:efficientnet_b0": 32, "timm:mobilenetv3_small_100": 32,
               "timm:convnext_atto": 32, "timm:regnety_008": 32, "timm:ghostnet_100": 32, "timm:repvgg_a0": 32,
               "timm:vit_tiny_patch16_224": 32, "timm:swin_tiny_patch4_window7_224": 32,
               "timm:efficientformer_l1": 224, "timm:edgenext_xx_small": 32, "timm:poolformer_s12": 32}
# The models the issue found crashing, hanging or pruning silently less (docs/pruning.md); MaxViT's
# windows need 224×224.
ISSUE_MODELS = {"timm:levit_128s": 64, "timm:tiny_vit_5m_224": 64, "timm:rexnet_100": 32,
                "timm:coatnet_nano_rw_224": 64, "timm:cspdarknet53": 32, "maxvit_t": 224}
TAKES_IMG_SIZE = ("timm:vit_", "timm:swin_", "timm:levit_", "timm:coatnet_")


def model_kwargs(name: str, size: int) -> dict:
    """Factory arguments of `name` (a torchvision name, or a timm:… source) for inputs of `size`."""
    if name.startswith(TAKES_IMG_SIZE):
        return {"img_size": size}
    return {"image_size": size} if name.startswith("vit_") else {}


def source(name: str) -> str:
    return name if ":" in name else f"torchvision:{name}"


def build(name: str, size: int) -> nn.Module:
    """An untrained model whose outputs are far from zero, so that an export bug would show:
    torchvision zero-initialises some classifiers, and untrained BatchNorm statistics let
    activations fade through deep networks."""
    model = build_model(source(name), {"num_classes": 10, **model_kwargs(name, size)})
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


def _rebuilt(name: str, size: int, entries: list, pruned: nn.Module, example: torch.Tensor) -> None:
    """A fresh model with `entries` replayed must load `pruned`'s weights and compute the same
    (what a checkpoint's reload does)."""
    fresh = build_model(source(name), {"num_classes": 10, **model_kwargs(name, size)}).eval()
    replay(fresh, [entries], tuple(example.shape[1:]))
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        if not torch.allclose(fresh(example), pruned(example), atol=1e-6, rtol=1e-5):
            raise CompressorError("the model rebuilt from its pruning history computes something else")


def _prune(name: str, size: int, ratio: float, workdir: Path, ignore: list[str]) -> dict:
    torch.manual_seed(0)
    model, shape = build(name, size), (3, size, size)
    example = example_input(shape)
    macs, params = count_macs_params(model, example)
    trial = prune_copy(model, example, Plan(), ratio, survey(model, example, match_modules(model, ignore, "ignore")))
    pruned = trial.model
    drop_autograd_history(pruned)
    _rebuilt(name, size, trial.entries, pruned, example)
    path = workdir / f"{name.replace(':', '_')}.onnx"
    exporter = ox.export(pruned, shape, path)
    # The export's own rule: atol 1e-4, scaled down with outputs smaller than 1 (onnx.effective_atol).
    agreement = ox.parity(pruned, path, torch.randn(4, *shape), atol=1e-4, rtol=1e-3)
    return {"heads_before": heads(model), "macs_kept": trial.macs / macs, "params_kept": trial.params / params,
            "heads_after": heads(pruned), "skipped": trial.skipped, "exporter": exporter,
            "max_abs_diff": agreement["max_abs_diff"], "output_scale": agreement["output_scale"],
            "degenerate": agreement["degenerate"]}


def check(name: str, size: int, ratio: float, workdir: Path) -> dict:
    """One row of the sweep: what pruning `name` at `ratio` did, or the error that stopped it;
    where the error names layers to ignore, what pruning did with them ignored."""
    row = {"model": name, "input": f"{size}×{size}", "ratio": ratio, "ignore": []}
    start = time.perf_counter()
    try:
        try:
            row.update(ok=True, **_prune(name, size, ratio, workdir, []))
        except BreakingGroups as e:
            row.update(error=str(e), ignore=e.roots)
            row.update(ok=True, **_prune(name, size, ratio, workdir, e.roots))
    except CompressorError as e:
        row.update(ok=False, error=str(e))
    return {**row, "seconds": time.perf_counter() - start}
