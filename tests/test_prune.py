"""The prune pass and compressor.pruning on real models: ratios and targets land where asked,
per-layer controls hold, attention heads go whole and the model still runs, exports and
reloads, and structures torch-pruning cannot follow fail with the module and operation named."""

import contextlib
import inspect
import math
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from compressor.errors import CompressorError
from compressor.models import TRUST_ALL, build_model, load_weights, read_state_dict
from compressor.passes.prune import PruneParams, prune_to
from compressor.pipeline import Pipeline
from compressor.pruning.attention import HeadAttention
from compressor.measure import count_macs_params
from compressor.pruning.engine import Plan
from compressor.pruning.graph import build_graph, survey
from compressor.pruning.targets import bisect, prune_copy
from compressor.recipe import parse_recipe
from compressor.report import _markdown
from compressor.runtime import onnx as ox
from compressor.state import load_checkpoint
from tests.conftest import TEACHER, needs_fmnist, needs_teacher

RESNET20 = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 16}}
TINY_VIT = {"source": "python:torchvision.models.vision_transformer:VisionTransformer",
            "kwargs": {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 4, "hidden_dim": 64,
                       "mlp_dim": 128, "num_classes": 10}}
SYNTHETIC_RGB = {"dataset": "synthetic", "channels": 3, "image_size": 32, "train_samples": 64, "eval_samples": 32,
                 "batch_size": 16}


def resnet20(trained: bool = False) -> nn.Module:
    model = build_model(RESNET20["source"], {**RESNET20["kwargs"], "num_classes": 10})
    if trained:
        load_weights(model, read_state_dict(TEACHER), "teacher")
    return model.eval()


def prune(model, ratio: float, example=None, **params) -> list:
    example = torch.randn(1, 1, 28, 28) if example is None else example
    return prune_to(model, example, PruneParams(type="prune", **params), ratio)


def conv_widths(model) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def run_recipe(tmp_path, model: dict, data: dict, passes: list[dict]):
    recipe = parse_recipe({"name": "t", "seed": 0, "device": "cpu", "model": model, "data": data, "passes": passes})
    pipeline = Pipeline(recipe, tmp_path / "run")
    return pipeline.run(fresh=True), pipeline


def randomise_heads(model: nn.Module) -> None:
    """torchvision zero-initialises classifier heads: outputs would all be 0 and match anything."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.05)


def test_ratio_halves_every_prunable_layer_and_keeps_the_classifier():
    model = resnet20()
    before = conv_widths(model)
    prune(model, 0.5)
    after = conv_widths(model)
    assert after["conv1"] == before["conv1"] // 2 and after["layer3.1.conv1"] == before["layer3.1.conv1"] // 2
    assert model.fc.out_features == 10
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("key, goal", [("macs", 0.5), ("params", 0.4)])
def test_targets_land_within_five_percent(key, goal):
    model = resnet20()
    example = torch.randn(1, 1, 28, 28)
    base = dict(zip(("macs", "params"), count_macs_params(model, example)))
    trial = bisect(model, example, Plan(), survey(model, example), key, goal * base[key], tolerance=0.04)
    kept = getattr(trial, key) / base[key]
    assert goal * 0.95 <= kept <= goal


def test_round_to_keeps_multiples_and_never_empties_a_layer():
    model = resnet20()
    prune(model, 0.7, round_to=8)
    widths = conv_widths(model)
    assert all(w % 8 == 0 and w >= 8 for w in widths.values()), widths


def test_global_ranking_respects_max_ratio_per_layer():
    model = resnet20()
    with torch.no_grad():  # a layer whose channels all look useless: global ranking would empty it
        model.layer1[1].bn1.weight.fill_(1e-4)
    before = conv_widths(model)
    prune(model, 0.3, importance="bn_scale", max_ratio_per_layer=0.75, **{"global": True})
    after = conv_widths(model)
    assert after["layer1.1.conv1"] == math.ceil(before["layer1.1.conv1"] * 0.25)
    assert all(after[n] >= math.ceil(w * 0.25) for n, w in before.items())


def test_ignore_and_per_layer_ratios_by_glob():
    model = resnet20()
    before = conv_widths(model)
    prune(model, 0.5, ignore=["layer2.*.conv1"], ratios={"layer3.*": 0.25})
    after = conv_widths(model)
    assert all(after[f"layer2.{i}.conv1"] == before[f"layer2.{i}.conv1"] for i in range(3))
    assert after["layer3.1.conv1"] == 48 and after["layer1.0.conv1"] == 8


def test_a_glob_matching_nothing_names_the_key():
    with pytest.raises(CompressorError, match="ratios: pattern 'layer9.\\*' matches no module"):
        prune(resnet20(), 0.5, ratios={"layer9.*": 0.2})


@pytest.mark.parametrize("importance", ["magnitude", "bn_scale", "taylor", "lamp", "fpgm", "random"])
def test_every_criterion_prunes_through_the_pass(tmp_path, importance):
    data = {"dataset": "synthetic", "channels": 1, "image_size": 28, "train_samples": 64, "eval_samples": 32,
            "batch_size": 16}
    state, _ = run_recipe(tmp_path, RESNET20, data, [{"type": "prune", "importance": importance, "ratio": 0.3}])
    assert 0.4 < state.records[-1]["metrics"]["macs_kept"] < 0.6
    assert state.model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@needs_fmnist
@needs_teacher
def test_magnitude_keeps_what_matters_where_random_does_not():
    from compressor.data import load_data
    from compressor.recipe import DataSpec
    from compressor.tasks.classification import Classification

    data = load_data(DataSpec(dataset="fashion-mnist", eval_samples=1000), 0)
    top1 = {}
    for importance in ("magnitude", "random"):
        model = resnet20(trained=True)
        prune(model, 0.2, importance=importance)
        top1[importance] = Classification().evaluate(model, data.eval, torch.device("cpu"))["top1"]
    assert top1["magnitude"] > top1["random"] + 10, top1


@needs_fmnist
@needs_teacher
def test_steps_with_finetuning_compound_to_the_ratio_and_replay_from_the_checkpoint(tmp_path):
    data = {"dataset": "fashion-mnist", "train_samples": 256, "eval_samples": 200, "batch_size": 64}
    state, pipeline = run_recipe(tmp_path, {**RESNET20, "checkpoint": str(TEACHER)}, data, [
        {"type": "prune", "ratio": 0.5, "steps": 2, "finetune": {"epochs": 0.25, "lr": 0.01}}])
    metrics = state.records[-1]["metrics"]
    assert [s["step"] for s in metrics["steps"]] == [1, 2] and "finetune" in metrics["steps"][0]
    assert len(state.pruning_history) == 2
    widths = conv_widths(state.model)
    assert widths["layer3.1.conv1"] in (31, 32, 33) and widths["layer1.0.conv1"] in (7, 8, 9), widths
    loaded = load_checkpoint(pipeline.run_dir / "00-prune")
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), state.model.cpu()(x))


def test_vit_loses_whole_heads_runs_exports_and_reloads(tmp_path):
    state, pipeline = run_recipe(tmp_path, TINY_VIT, SYNTHETIC_RGB, [{"type": "prune", "ratio": 0.5}])
    model = state.model.cpu().eval()
    blocks = [m for m in model.modules() if isinstance(m, HeadAttention)]
    assert [b.num_heads for b in blocks] == [2, 2] and all(b.head_dim == 16 for b in blocks)
    assert all(b.out_proj.in_features == 32 for b in blocks)
    assert state.records[-1]["metrics"]["steps"][0]["heads_removed"] == 4
    randomise_heads(model)
    path = tmp_path / "vit.onnx"
    ox.export(model, (3, 32, 32), path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.allclose(ox.session(path).run(None, {ox.INPUT_NAME: x.numpy()})[0], expected, atol=1e-4)
    # The checkpoint rebuilds the pruned architecture from the source and its history.
    loaded = load_checkpoint(pipeline.run_dir / "00-prune", TRUST_ALL).model  # the test's own python: source
    loaded.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_swin_heads_keep_their_relative_position_bias():
    model = SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                            num_classes=10).eval()
    randomise_heads(model)
    x = torch.randn(2, 3, 32, 32)
    prune(model, 0.5, example=x[:1])
    blocks = [m for m in model.modules() if isinstance(m, HeadAttention)]
    assert [b.num_heads for b in blocks] == [1, 1, 2, 2]
    assert all(b.relative_position_bias_table.shape[1] == b.num_heads for b in blocks)
    assert model(x).shape == (2, 10)


def test_timm_vit_loses_heads_and_replays():
    pytest.importorskip("timm")
    from compressor.pruning.engine import replay

    source = ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "num_classes": 10})
    model, original = build_model(*source).eval(), build_model(*source).eval()
    original.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    history = prune(model, 0.5, example=x[:1])
    assert [e[1] for e in history[:2]] == ["heads", "heads"]
    assert all(b.attn.num_heads == 1 and b.attn.attn_dim == 64 for b in model.blocks)
    replay(original, [history], (3, 32, 32)).load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(original(x), model(x))


def test_heads_false_prunes_only_mlp_width():
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                              num_classes=10).eval()
    prune(model, 0.5, example=torch.randn(1, 3, 32, 32), heads=False)
    assert all(m.num_heads == 4 for m in model.modules() if isinstance(m, (nn.MultiheadAttention, HeadAttention)))
    assert model.encoder.layers[0].mlp[0].out_features == 64


class HardCodedReshape(nn.Module):
    """Reads its feature width from a constant: pruning conv2 breaks the reshape."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.conv2(torch.relu(self.conv1(x))).mean((2, 3))
        return self.fc(x.reshape(x.shape[0], 2, 16).flatten(1))


class UnregisteredTensor(nn.Module):
    """Scales conv1's output by a plain tensor attribute that no pruner knows of."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.scale = torch.ones(1, 16, 1, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.conv1(x)) * self.scale).mean((2, 3)))


@pytest.mark.parametrize("model, operation", [
    (HardCodedReshape(), r"x\.reshape\(x\.shape\[0\], 2, 16\)"),
    (UnregisteredTensor(), r"self\.scale"),
])
def test_unsupported_structures_name_the_module_and_operation(model, operation):
    with pytest.raises(CompressorError, match=operation) as caught:
        prune(model.eval(), 0.5)
    assert "Traceback" not in str(caught.value) and "test_prune.py" in str(caught.value)


def test_latency_target_params_are_checked():
    with pytest.raises(ValueError, match="give exactly one of macs, params, speedup or latency_ms"):
        PruneParams(type="prune", target={"macs": 0.5, "speedup": 2.0})
    with pytest.raises(ValueError, match="backend, batch_size only apply to speedup and latency_ms"):
        PruneParams(type="prune", target={"macs": 0.5, "backend": "torch", "batch_size": 4})
    with pytest.raises(ValueError, match="unknown latency backend 'onnxruntme'"):
        PruneParams(type="prune", target={"speedup": 2.0, "backend": "onnxruntme"})


@pytest.mark.slow
def test_speedup_target_is_met_as_measured_on_onnxruntime(tmp_path):
    data = {"dataset": "synthetic", "channels": 1, "image_size": 28, "train_samples": 64, "eval_samples": 32}
    # One thread, as README advises on a shared machine: with two, CI once measured 1.27× at 8.5×
    # fewer MACs where a quiet run measures 2.1×; with one, 1.9× comes at 3.4× fewer MACs.
    target = {"speedup": 1.5, "backend": "onnxruntime", "batch_size": 16, "iters": 30, "threads": 1}
    state, _ = run_recipe(tmp_path, RESNET20, data, [{"type": "prune", "target": target, "round_to": 8}])
    metrics = state.records[-1]["metrics"]
    assert metrics["latency_reached"]["speedup"] >= 1.5
    assert metrics["latency_trials"] and all("latency_ms" in t for t in metrics["latency_trials"])
    # The report shows the search: one row per trial, those that met the target marked (on a busy
    # machine the last trial may be one that missed: the search then keeps an earlier one).
    report = _markdown({"recipe": "t", "passes": state.records})
    search = report.split("## Latency search in 00-prune")[1]
    trial_rows = [line for line in search.splitlines() if line.startswith("| 1 |")]
    assert [row.endswith("| ✓ |") for row in trial_rows] == [t["met"] for t in metrics["latency_trials"]]
    kept = [t for t in metrics["latency_trials"] if t["latency_ms"] == metrics["latency_reached"]["latency_ms"]]
    assert kept and kept[0]["met"]


class CachedBias(nn.Module):
    """Caches, in eval mode, a tensor computed from a parameter, per device (timm's LeViT,
    EfficientFormer and TinyViT attention biases): a forward with autograd on leaves a tensor
    with history there, and one before pruning leaves a tensor of the old width."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)
        self.offsets = nn.Parameter(torch.randn(8))
        self.cache: dict[str, torch.Tensor] = {}
        self.fc = nn.Linear(8, 10)

    def offset(self, device) -> torch.Tensor:
        if self.training:
            return self.offsets * 2
        if str(device) not in self.cache:
            self.cache[str(device)] = self.offsets * 2
        return self.cache[str(device)]

    def forward(self, x):
        x = self.conv2(torch.relu(self.conv1(x))).mean((2, 3))
        return self.fc(x + self.offset(x.device))


def test_a_cache_filled_with_autograd_on_neither_breaks_copies_nor_goes_stale():
    from compressor.pruning.engine import replay

    torch.manual_seed(0)
    model, example = CachedBias().eval(), torch.randn(1, 1, 28, 28)
    macs = count_macs_params(model, example)[0]  # counting runs with autograd on: the cache holds history
    assert model.cache and next(iter(model.cache.values())).grad_fn is not None
    trial = bisect(model, example, Plan(), survey(model, example), "macs", 0.6 * macs)  # each trial a deep copy
    pruned = trial.model
    assert pruned.offsets.shape == (pruned.conv2.out_channels,) != (8,) and pruned(example).shape == (1, 10)
    rebuilt = replay(CachedBias().eval(), [trial.entries], (1, 28, 28))
    rebuilt.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(example), pruned(example))


class PartialResidual(nn.Module):
    """timm's RexNet block: widens its input, which it adds to the first channels."""

    def __init__(self, width: int, extra: int = 2):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(width, width + extra, 1), nn.BatchNorm2d(width + extra))

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([y[:, :x.shape[1]] + x, y[:, x.shape[1]:]], 1)


def partial_residuals(blocks: int, head: bool = True) -> nn.Module:
    """A chain of partial residuals, then a conv (RexNet's head) or straight into the classifier."""
    torch.manual_seed(0)
    width = 8 + 2 * blocks
    tail = [nn.Conv2d(width, 16, 1)] if head else []
    return nn.Sequential(nn.Conv2d(1, 8, 3), *[PartialResidual(8 + 2 * i) for i in range(blocks)], *tail,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16 if head else width, 10)).eval()


def test_a_chain_of_partial_residuals_prunes_in_seconds():
    # torch-pruning reads a slice's width as its input's: the cat offsets come out wrong, and
    # forming a group took 10 s at 5 blocks, about 8× more with each block after.
    from compressor.pruning.engine import replay

    model, example = partial_residuals(12), torch.randn(1, 1, 12, 12)
    start = time.perf_counter()
    history = prune(model, 0.5, example=example)
    assert time.perf_counter() - start < 10
    assert model[12].conv[0].out_channels == 16 and model(example).shape == (1, 10)
    rebuilt = replay(partial_residuals(12), [history], (1, 12, 12))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(example), model(example))


def test_a_group_whose_index_mapping_runs_away_stops_in_seconds(monkeypatch):
    # With torch-pruning's own cat widths, forming a group of 8 partial residuals would take
    # hours (10 s at 5, about 8× more with each block after).
    from compressor.pruning import graph
    from compressor.pruning.engine import prune_channels

    monkeypatch.setattr(graph, "known_concat_sizes", lambda sizes: contextlib.nullcontext())
    model, example = partial_residuals(8), torch.randn(1, 1, 12, 12)
    found = survey(model, example)
    start = time.perf_counter()
    with pytest.raises(CompressorError, match=r"fails on the channels of '8\.conv\.0': .*index mapping runs away"):
        prune_channels(model, example, Plan(), 0.5, found.protected_layers())
    assert time.perf_counter() - start < 10


class Ghost(nn.Module):
    """GhostNet's module: a layer's channels and a depthwise copy of them, side by side; channel
    i and i + width/2 stay together, which torch-pruning's ranking does not know."""

    def __init__(self, width: int, out: int):
        super().__init__()
        self.primary = nn.Sequential(nn.Conv2d(width, out // 2, 1), nn.BatchNorm2d(out // 2), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(out // 2, out // 2, 3, padding=1, groups=out // 2), nn.BatchNorm2d(out // 2))
        self.shortcut = nn.Sequential(nn.Conv2d(width, out, 1), nn.BatchNorm2d(out))

    def forward(self, x):
        p = self.primary(x)
        return torch.cat([p, self.cheap(p)], 1) + self.shortcut(x)


def ghosts() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3), Ghost(16, 32), Ghost(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10)).eval()


def test_groups_torch_pruning_leaves_whole_are_named_by_the_pass_inspect_and_a_target(tmp_path, capsys):
    from compressor.pruning.inspection import inspect_model

    source = {"source": "python:tests.test_prune:ghosts"}
    data = {**SYNTHETIC_RGB, "channels": 1, "image_size": 12}
    state, _ = run_recipe(tmp_path, source, data, [{"type": "prune", "ratio": 0.5}])
    skipped = state.records[-1]["metrics"]["steps"][0]["skipped"]
    assert set(skipped) == {"1.shortcut.0", "2.shortcut.0"}
    assert "the cut would take all 32 output channels of '2.shortcut.0'" in skipped["2.shortcut.0"]
    assert "not pruned: '2.shortcut.0': torch-pruning leaves it whole" in capsys.readouterr().out

    report = inspect_model(ghosts(), (1, 12, 12), "ghosts")
    assert [g.reason for g in report.survey.groups if g.root == "1.primary.0"] == [report.skipped["1.shortcut.0"]]

    model, example = ghosts(), torch.randn(1, 1, 12, 12)
    with pytest.raises(CompressorError, match="torch-pruning left 2 of the 3 groups it could cut whole") as caught:
        bisect(model, example, Plan(), survey(model, example), "macs", 0.2 * count_macs_params(model, example)[0])
    assert "un-ignore" not in str(caught.value)


class TwoCulprits(nn.Module):
    """Two branches that pruning breaks: one reshapes to a hard-coded width (torch-pruning maps
    it wrongly), the other scales by a plain tensor (the model fails once pruned)."""

    def __init__(self):
        super().__init__()
        self.a1, self.a2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.scale = torch.ones(1, 16, 1, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        a = self.a2(torch.relu(self.a1(x))).mean((2, 3))
        b = self.b2(torch.relu(self.b1(x)) * self.scale).mean((2, 3))
        return self.fc(torch.cat([a.reshape(a.shape[0], 2, 16).flatten(1), b], 1))


def test_every_group_that_breaks_is_named_at_once():
    model, example = TwoCulprits().eval(), torch.randn(1, 1, 28, 28)
    with pytest.raises(CompressorError, match="pruning breaks 2 groups of channels; add all 2 to ignore: 'b1', 'a2'") \
            as caught:
        prune_copy(model, example, Plan(), 0.5, survey(model, example))
    assert "self.scale" in str(caught.value) and "a.reshape(a.shape[0], 2, 16)" in str(caught.value)
    prune(model, 0.5, ignore=["a2", "b1"])
    assert model.a1.out_channels == 8 and model(example).shape == (1, 10)


class ShapedScale(nn.Module):
    """timm's MetaFormer layer scale: the shape it views its parameter in is a plain tuple."""

    def __init__(self, width: int):
        super().__init__()
        self.scale, self.shape = nn.Parameter(torch.ones(width)), (width, 1, 1)

    def forward(self, x):
        return x * self.scale.view(self.shape)


class ScaledResidual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(width, 2 * width, 1), nn.Conv2d(2 * width, width, 1)
        self.scale = ShapedScale(width)

    def forward(self, x):
        return x + self.scale(self.conv2(torch.relu(self.conv1(x))))


def test_inspect_names_a_group_that_fails_once_cut_whatever_layer_torch_pruning_roots_it_at():
    from compressor.pruning.inspection import inspect_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), ScaledResidual(8), ScaledResidual(8), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10)).eval()
    report = inspect_model(model, (1, 12, 12), "scaled")
    assert list(report.broken) == ["2.conv2"]  # torch-pruning's root; survey names the group by its first layer
    stream = [g for g in report.survey.groups if g.root == "0"]
    assert stream and "self.scale.view(self.shape)" in stream[0].reason
    assert [g.root for g in report.survey.prunable] == ["1.conv1", "2.conv1"]


def test_concat_widths_come_from_the_forward():
    import torch_pruning as tp
    from torch_pruning.dependency import index_mapping

    assert list(inspect.signature(index_mapping.update_concat_index_mapping).parameters) == ["graph", "cat_node"]
    model, example = partial_residuals(1), torch.randn(1, 1, 12, 12)
    inferred = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    ours = build_graph(model, example)
    widths = [[n.module.concat_sizes for n in g.module2node.values() if n.type == tp.ops.OPTYPE.CONCAT]
              for g in (inferred, ours)]
    assert widths[1] == [[8, 2]]
    assert widths[0] != widths[1], "torch-pruning infers a cat of a slice right now: known_concat_sizes may go"


def test_a_bounded_group_stops_growing():
    from torch_pruning.dependency.group import Group

    from compressor.pruning.graph import out_group
    from compressor.pruning.tp_internals import GroupExplosion, bounded_groups

    assert list(inspect.signature(Group.add_dep).parameters) == ["self", "dep", "idxs"]
    model = resnet20()
    graph = build_graph(model, torch.randn(1, 1, 28, 28))
    with bounded_groups(1, 16):  # ResNet's stem group reaches each layer once, with its 16 channels
        whole = len(out_group(graph, model.conv1))
    for visits, channels in ((0, 16), (1, 15)):
        with bounded_groups(visits, channels), pytest.raises(GroupExplosion, match="index mapping runs away"):
            out_group(graph, model.conv1)
    assert len(out_group(graph, model.conv1)) == whole  # the bound is gone with the block
