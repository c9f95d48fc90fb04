"""Pruning Ultralytics detectors with the prune pass's machinery: every group but the Detect
head's output convs loses channels (C2f/C3k2 once split-free, SPPF, Concat, the head), YOLO11's
C2PSA attention loses whole heads, and the pruned model rebuilds from its source record and
history with identical outputs and exports to ONNX matching onnxruntime."""

import json

import pytest
import torch
import torch.nn as nn

from compressor.inputs import example_input
from compressor.measure import count_macs_params
from compressor.models import NO_TRUST, load_source
from compressor.passes.prune import PruneParams, prune_to
from compressor.pruning.attention import attention_heads
from compressor.pruning.graph import survey
from compressor.pruning.leftovers import drop_autograd_history
from compressor.runtime import onnx as ox
from compressor.schema import ModelSpec
from compressor.state import rebuild_model
from tests.conftest import skip_module_without_ultralytics

skip_module_without_ultralytics()  # Ultralytics then comes through compressor.ultra: offline, quiet

PICO = "ultralytics:recipes/models/yolov8-pico.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread: a pico detector's convolutions are small, and on a shared 2-core machine two
    OpenMP threads spend their time waiting for each other (these tests ran 5-10× slower with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def detector(source: str, shape, num_classes: int = 10):
    """(model, source record) with BatchNorm statistics of real activations and scales spread out,
    so that outputs vary with the input and a wrong channel would show."""
    torch.manual_seed(0)
    model, record = load_source(ModelSpec(source=source, num_classes=num_classes))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the calibration batch
                m.weight.uniform_(0.2, 1.5)
        model.train()(torch.randn(4, *shape))
    return model.eval(), json.loads(json.dumps(record))  # as state.json holds it


def head_outputs(model) -> list[int]:
    head = model.model[-1]
    return [seq[-1].out_channels for seq in [*head.cv2, *head.cv3]] + [head.dfl.conv.out_channels]


def check_rebuild_and_export(model, record, history, shape, tmp_path, dynamo: bool) -> dict:
    """What a checkpoint's reload does (source record + history, then the weights) gives the same
    outputs; the ONNX export matches onnxruntime."""
    drop_autograd_history(model)
    x = torch.randn(2, *shape)
    rebuilt = rebuild_model(record, history, shape, model.state_dict(), "the pruned model", NO_TRUST)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    path = tmp_path / "model.onnx"
    assert ox.export(model, shape, path, dynamo=dynamo) == ("dynamo" if dynamo else "torchscript")
    agreement = ox.parity(model, path, torch.randn(3, *shape), atol=1e-4, rtol=1e-3)
    assert not agreement["degenerate"]
    return agreement


def test_pico_prunes_at_half_keeps_the_head_outputs_rebuilds_and_exports(tmp_path):
    shape = (3, 64, 64)
    model, record = detector(PICO, shape)
    example = example_input(shape)
    macs, params = count_macs_params(model, example)
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    entries = prune_to(model, example, PruneParams(type="prune"), 0.5)
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert head_outputs(model) == [64] * 3 + [10] * 3 + [1]
    assert after["model.0.conv"] == before["model.0.conv"] // 2  # the stem
    assert after["model.9.cv1.conv"] == before["model.9.cv1.conv"] // 2  # SPPF
    assert after["model.2.cv0.conv"] == before["model.2.cv0.conv"] // 2  # a split-free C2f
    assert after["model.22.cv2.0.1.conv"] == before["model.22.cv2.0.1.conv"] // 2  # the head's inner convs
    macs_kept, params_kept = (a / b for a, b in zip(count_macs_params(model, example), (macs, params)))
    assert macs_kept < 0.3 and params_kept < 0.3
    check_rebuild_and_export(model, record, [entries], shape, tmp_path, dynamo=False)


def test_pico_global_bn_scale_pruning_keeps_the_cap_and_round_to():
    shape = (3, 64, 64)
    model, record = detector(PICO, shape)
    example = example_input(shape)
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    p = PruneParams(type="prune", importance="bn_scale", **{"global": True}, max_ratio_per_layer=0.5, round_to=8)
    entries = prune_to(model, example, p, 0.6)
    assert head_outputs(model) == [64] * 3 + [10] * 3 + [1]
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    cut = {n for n in after if after[n] < before[n]}
    assert cut and all(after[n] % 8 == 0 and after[n] >= before[n] // 2 for n in cut)
    x = torch.randn(2, *shape)
    rebuilt = rebuild_model(record, [entries], shape, model.state_dict(), "the pruned model", NO_TRUST)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_the_survey_says_why_the_head_outputs_stay():
    model, _ = detector(PICO, (3, 64, 64))
    found = survey(model, example_input((3, 64, 64)))
    reasons = {name: g.reason for g in found.groups if g.reason for name in [g.root, *g.layers]}
    assert reasons["model.22.cv2.0.2"] == "its channels are the Detect head's box/DFL outputs (64 = 4×reg_max)"
    assert reasons["model.22.cv3.1.2"] == "its channels are the Detect head's class scores (10 = nc)"
    assert len(found.prunable) > 40 and not found.untraced


def test_inspect_measures_an_ultralytics_model_at_its_native_size():
    from compressor.runs import load_target

    _, shape, _, _ = load_target(PICO, None, {"num_classes": 10}, NO_TRUST)
    assert shape == (3, 640, 640)
    _, shape, _, _ = load_target(PICO, (3, 96, 96), {"num_classes": 10}, NO_TRUST)
    assert shape == (3, 96, 96)


# yolov8n ~15 s, yolov8s ~20 s, yolo11n ~35 s at 160×160 on 2 busy CPU threads (dynamo export most of it)
@pytest.mark.slow
@pytest.mark.parametrize("name, heads", [("yolov8n.yaml", 0), ("yolov8s.yaml", 0), ("yolo11n.yaml", 2)])
def test_yolo_prunes_at_half_rebuilds_and_exports(name, heads, tmp_path):
    shape = (3, 160, 160)
    model, record = detector(f"ultralytics:{name}", shape)
    example = example_input(shape)
    macs, params = count_macs_params(model, example)
    assert sum(attention_heads(model).values()) == heads
    entries = prune_to(model, example, PruneParams(type="prune"), 0.5)
    assert head_outputs(model) == [64] * 3 + [10] * 3 + [1]
    assert sum(attention_heads(model).values()) == heads // 2  # C2PSA: whole heads go
    macs_kept, params_kept = (a / b for a, b in zip(count_macs_params(model, example), (macs, params)))
    assert macs_kept < 0.3 and params_kept < 0.3
    check_rebuild_and_export(model, record, [entries], shape, tmp_path, dynamo=True)


def test_yolo11_attention_loses_whole_heads_exactly():
    """Removing a head of C2PSA's attention computes what the block computes with that head's
    columns of the output projection zeroed (its attention output and positional conv go with it)."""
    import copy

    from ultralytics.nn.modules import C2PSA

    from compressor.pruning.attention import drop_heads

    torch.manual_seed(0)
    holder = nn.Sequential(C2PSA(256, 256)).eval()  # inner width 128: two heads of 64
    with torch.no_grad():
        for m in holder.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    reference = copy.deepcopy(holder)
    assert attention_heads(holder) == {"0.m.0.attn": 2}
    drop_heads(holder, "0.m.0.attn", [1])
    assert attention_heads(holder) == {"0.m.0.attn": 1}
    with torch.no_grad():
        reference.get_submodule("0.m.0.attn").proj.conv.weight[:, 64:] = 0
        x = torch.randn(2, 256, 8, 8)
        assert (holder(x) - reference(x)).abs().max() < 1e-5
