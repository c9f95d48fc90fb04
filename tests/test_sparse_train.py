"""Sparsity-aware training: BN-L1 slimming and the group regulariser on the one training loop,
the per-epoch record of the scales, and Network Slimming's global threshold in `prune`."""

import math

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from compressor.cli import app
from compressor.errors import CompressorError
from compressor.models import build_model
from compressor.passes import PASSES
from compressor.passes.sparse_train import ScaleSparsityParams, regularizer
from compressor.pipeline import RunContext
from compressor.recipe import parse_recipe
from compressor.sparsity.regularizers import GroupNormRegularizer
from compressor.state import State
from compressor.training import Step
from tests.conftest import needs_fmnist, write_recipe

UNUSED = 3  # the toy's channel whose input filter is held at zero


def recipe(data: dict, passes=()) -> dict:
    return {"name": "slim", "seed": 0, "device": "cpu",
            "model": {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}},
            "data": data, "passes": list(passes)}


SYNTHETIC = {"dataset": "synthetic", "channels": 1, "image_size": 8, "train_samples": 64, "eval_samples": 32,
             "batch_size": 32}


def toy_state() -> State:
    """conv(1→4) → BN → ReLU → pool → fc, with channel UNUSED's filter masked to zero: its BN
    input is constant, so its scale γ gets no gradient from the task, only from the regulariser."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(4 * 49, 10))
    mask = torch.ones_like(model[0].weight)
    mask[UNUSED] = 0
    return State(model, {"source": "toy", "kwargs": {}}, (1, 28, 28), masks={"0.weight": mask})


def run_pass(state: State, params: dict, data: dict, tmp_path) -> dict:
    cls = PASSES.get(params["type"])
    ctx = RunContext(parse_recipe(recipe(data)), tmp_path, torch.device("cpu"), pass_dir=tmp_path)
    torch.manual_seed(0)
    return cls(cls.parse(params)).run(state, ctx)


@needs_fmnist
def test_bn_l1_drives_the_scale_of_an_unused_channel_to_zero(tmp_path):
    data = {"dataset": "fashion-mnist", "train_samples": 1024, "batch_size": 32, "augment": False}
    slim = {"type": "sparse_train", "method": "bn_l1", "strength": 0.1, "epochs": 1, "lr": 0.1}
    state = toy_state()
    metrics = run_pass(state, slim, data, tmp_path)
    scales = state.model[1].weight.detach().abs()
    assert scales[UNUSED] < 0.02
    assert scales[[c for c in range(4) if c != UNUSED]].min() > 0.1, "the task keeps the channels it uses"
    assert [r["epoch"] for r in metrics["bn_scales"]] == [0, 1]
    assert metrics["bn_scales"][-1]["below"]["0.1"] == 0.25  # 1 of 4 channels
    assert (tmp_path / "bn_scales.png").read_bytes()[:4] == b"\x89PNG"

    control = toy_state()
    run_pass(control, {**slim, "strength": 0.0}, {**data, "train_samples": 64}, tmp_path / "control")
    assert control.model[1].weight[UNUSED] == 1.0, "without the regulariser nothing moves the unused scale"


def test_strength_zero_adds_no_term_and_trains_exactly_like_train(tmp_path):
    p = ScaleSparsityParams(strength=0.0, epochs=1)
    state = toy_state()
    ctx = RunContext(parse_recipe(recipe(SYNTHETIC)), tmp_path, torch.device("cpu"), pass_dir=tmp_path)
    assert regularizer(p, state, ctx) is None
    assert regularizer(ScaleSparsityParams(method="group_norm", strength=0.0), state, ctx) is None
    plain, sparse = toy_state(), toy_state()
    run_pass(plain, {"type": "train", "epochs": 1}, SYNTHETIC, tmp_path / "train")
    run_pass(sparse, {"type": "sparse_train", "strength": 0.0, "epochs": 1}, SYNTHETIC, tmp_path / "sparse")
    for (name, a), b in zip(plain.model.state_dict().items(), sparse.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_group_norm_pulls_channels_coupled_by_residual_adds_together():
    """The stem's output channels are added to every layer1 block's output: one group. The
    regulariser must pull channel j of all its BatchNorms (and of the stem conv) by one factor."""
    torch.manual_seed(0)
    model = build_model("zoo:resnet20", {"in_channels": 1, "num_classes": 10, "width": 8}).train()
    term = GroupNormRegularizer(1e-2, "constant", torch.randn(1, 1, 8, 8))
    term.attach(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    term.before_step(model, Step(None, None, None, 0, 0.0))
    coupled = [model.bn1, model.layer1[0].bn2, model.layer1[1].bn2, model.layer1[2].bn2]
    factors = [m.weight.grad / m.weight.detach() for m in coupled]  # per channel
    factors.append((model.conv1.weight.grad / model.conv1.weight.detach()).flatten(1).mean(1))
    for f in factors[1:]:
        assert torch.allclose(f, factors[0], rtol=1e-4)
    assert (factors[0] >= 1e-2 * (1 - 1e-4)).all() and (factors[0] <= 1e-2 * 16 * (1 + 1e-4)).all()  # reg·[1, 2^4]
    assert factors[0].max() > 2 * factors[0].min(), "weaker channels are pulled harder"


def test_group_norm_pass_records_scales_per_epoch(tmp_path):
    metrics = run_pass(toy_state(), {"type": "sparse_train", "method": "group_norm", "strength": 1e-3, "epochs": 1},
                       SYNTHETIC, tmp_path)
    assert metrics["method"] == "group_norm" and [r["epoch"] for r in metrics["bn_scales"]] == [0, 1]
    assert set(metrics["bn_scales"][0]["below"]) == {"0.001", "0.01", "0.1"}
    assert (tmp_path / metrics["histogram"]).is_file()


def test_bad_method_and_misplaced_options_fail_clearly(tmp_path):
    with pytest.raises(CompressorError, match=r"passes\[0\]\.method: input should be 'bn_l1', 'group_norm' or 'nm' "
                                              r"\(got 'bn-l1'\)"):
        parse_recipe(recipe(SYNTHETIC, [{"type": "sparse_train", "method": "bn-l1"}]))
    with pytest.raises(CompressorError, match="method bn_l1 takes no pattern"):
        parse_recipe(recipe(SYNTHETIC, [{"type": "sparse_train", "method": "bn_l1", "pattern": "2:4"}]))
    with pytest.raises(CompressorError, match="method nm takes no report_below"):
        parse_recipe(recipe(SYNTHETIC, [{"type": "sparse_train", "method": "nm", "report_below": [0.1]}]))
    path = write_recipe(tmp_path / "r.yaml", recipe(SYNTHETIC, [{"type": "sparse_train", "method": "l1"}]))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "passes[0].method" in result.output and "Traceback" not in result.output


def test_bn_l1_on_a_model_without_batchnorm_says_what_to_use(tmp_path):
    state = State(build_model("zoo:mlp", {"image_size": 8, "hidden": 16}), {"source": "zoo:mlp"}, (1, 8, 8))
    with pytest.raises(CompressorError, match="no BatchNorm; use method: group_norm"):
        run_pass(state, {"type": "sparse_train", "method": "bn_l1"}, SYNTHETIC, tmp_path)


def slimmed_resnet() -> nn.Module:
    """ResNet-20 as if slimmed: one layer's scales all faded, most of another's faded."""
    torch.manual_seed(0)
    model = build_model("zoo:resnet20", {"in_channels": 1, "num_classes": 10})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0)
        model.layer1[1].bn1.weight.fill_(1e-4)
        model.layer3[0].bn1.weight[:60] = 1e-4
    return model


def test_global_bn_scale_threshold_cuts_faded_layers_but_never_empties_one():
    from compressor.passes.prune import PruneParams, prune_to

    model = slimmed_resnet()
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    p = PruneParams(type="prune", importance="bn_scale", **{"global": True}, max_ratio_per_layer=0.9)
    prune_to(model, torch.randn(1, 1, 28, 28), p, 0.3)
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    for name, width in after.items():
        assert width >= math.ceil(before[name] * (1 - p.max_ratio_per_layer)), f"{name}: {before[name]} → {width}"
    assert after["layer1.1.conv1"] < before["layer1.1.conv1"], "a fully faded layer is cut (down to the floor)"
    assert after["layer3.0.conv1"] < before["layer3.0.conv1"] / 2
