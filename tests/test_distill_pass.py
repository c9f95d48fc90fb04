"""The distill pass: pairing, adapters that start as the kept-channel selection, recipe errors,
and real runs whose exported model never holds an adapter."""

import copy
import json

import onnx
import pytest
import torch
import torch.nn as nn
import torch_pruning as tp
import torchvision
from safetensors.torch import load_file
from typer.testing import CliRunner

from compressor.cli import app
from compressor.distill.adapters import add_adapters, kept_channels
from compressor.distill.losses import cwd, mse
from compressor.distill.pairing import pair_layers
from compressor.distill.terms import Teacher, tap
from compressor.errors import CompressorError
from compressor.models import build_model
from compressor.recipe import parse_recipe
from compressor.training import Step
from tests.conftest import write_recipe

runner = CliRunner()


def prune(model: nn.Module, example: torch.Tensor, ratio: float) -> list[list]:
    """Prunes `model` in place with torch-pruning; returns the history as State records it."""
    pruner = tp.pruner.BasePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[model.fc])
    pruner.step()
    return [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()]


def prune_dead_channels(teacher: nn.Module, example: torch.Tensor, ratio: float):
    """A pruned copy of `teacher`, after the channels it lost are made dead in the teacher (their
    BatchNorm scale and shift set to 0): the copy then computes exactly the teacher's kept channels."""
    student = copy.deepcopy(teacher)
    history = prune(student, example, ratio)
    graph = tp.DependencyGraph().build_dependency(teacher, example_inputs=example)
    modules = dict(teacher.named_modules())
    with torch.no_grad():
        for name, out, idxs in history:
            pruner = graph.get_pruner_of_module(modules[name])
            group = graph.get_pruning_group(modules[name], pruner.prune_out_channels if out else pruner.prune_in_channels, idxs)
            for dep, channels in group:
                if isinstance(dep.target.module, nn.BatchNorm2d):
                    plain = [getattr(c, "idx", c) for c in channels]
                    dep.target.module.weight[plain] = 0
                    dep.target.module.bias[plain] = 0
    return student, history


def features(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    store: dict[str, torch.Tensor] = {}
    hooks = tap(model, names, store)
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return store


def test_teacher_runs_folded_and_channels_last_without_changing_what_it_computes():
    teacher = torchvision.models.resnet18(num_classes=10).eval()
    for m in teacher.modules():  # trained-looking statistics, so a wrong fold would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    tapped = ["layer1", "layer2.0.conv1"]
    tutor = Teacher(teacher, tapped)
    tutor.attach(nn.Linear(1, 1))  # a student on the CPU
    kinds = dict(tutor.model.named_modules())
    assert isinstance(kinds["layer1.0.bn1"], nn.Identity) and isinstance(kinds["bn1"], nn.Identity)
    assert isinstance(kinds["layer2.0.bn1"], nn.BatchNorm2d)  # its conv is tapped: its output must stay raw
    assert kinds["conv1"].weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(dict(teacher.named_modules())["layer1.0.bn1"], nn.BatchNorm2d)  # the original is untouched
    assert teacher.conv1.weight.is_contiguous()
    x, theirs = torch.randn(2, 3, 64, 64), {}
    tap(teacher, tapped, theirs)
    with torch.no_grad():
        assert torch.allclose(tutor.outputs(Step(x, None, None, 0, 0.0)), teacher(x), atol=1e-4)
    assert all(torch.allclose(tutor.features[name], theirs[name], atol=1e-4) for name in tapped)


def test_a_teacher_with_3d_convs_runs_as_it_is_beside_its_2d_ones():
    teacher = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Flatten(1, 2), nn.Conv2d(6, 4, 3)).eval()
    tutor = Teacher(teacher, [])
    tutor.attach(nn.Linear(1, 1))
    assert tutor.model[2].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 5, 8, 8)
    with torch.no_grad():
        assert torch.allclose(tutor.outputs(Step(x, None, None, 0, 0.0)), teacher(x), atol=1e-5)


def test_auto_pairs_a_pruned_torchvision_resnet_and_adapters_start_at_zero_loss():
    torch.manual_seed(0)
    teacher = build_model("torchvision:resnet18", {"num_classes": 10}).eval()
    example = torch.randn(1, 3, 64, 64)
    student, history = prune_dead_channels(teacher, example, 0.5)

    pairs = pair_layers(student, teacher, example, "auto")
    assert [(p.student, p.teacher, p.student_channels, p.teacher_channels) for p in pairs] == [
        ("layer1", "layer1", 32, 64), ("layer2", "layer2", 64, 128), ("layer3", "layer3", 128, 256),
        ("layer4", "layer4", 256, 512)]

    x = torch.randn(4, 3, 64, 64)
    s_feats, t_feats = features(student, x, [p.student for p in pairs]), features(teacher, x, [p.teacher for p in pairs])
    add_adapters(pairs, kept_channels(teacher, [history], (3, 64, 64), {p.teacher: p.teacher_channels for p in pairs}))
    for p in pairs:
        target = t_feats[p.teacher]
        assert target.abs().mean() > 1e-3  # a real signal, not a trivially zero map
        with torch.no_grad():
            mapped = p.adapter(s_feats[p.student])
        assert mse(mapped, target).item() < 1e-10, p.student
        assert cwd(mapped, target, temperature=1.0).item() < 1e-6, p.student

    add_adapters(pairs, None)  # without the pruning history: a default-initialised conv starts far off
    with torch.no_grad():
        assert all(mse(p.adapter(s_feats[p.student]), t_feats[p.teacher]).item() > 1e-3 for p in pairs)


def test_kept_channels_name_the_teacher_channels_the_student_holds():
    torch.manual_seed(0)
    teacher = build_model("zoo:resnet20", {"in_channels": 1, "width": 16}).eval()
    example = torch.randn(1, 1, 28, 28)
    student = copy.deepcopy(teacher)
    history = prune(student, example, 0.5)
    kept = kept_channels(teacher, [history], (1, 28, 28), {"conv1": 16, "layer2.1.conv1": 32, "layer2": 32})
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():  # the first conv sees an unpruned input, so its kept outputs match exactly
        torch.testing.assert_close(student.conv1(x), teacher.conv1(x)[:, kept["conv1"]])
    torch.testing.assert_close(student.layer2[1].conv1.weight,
                               teacher.layer2[1].conv1.weight[kept["layer2.1.conv1"]][:, kept["layer2"]])


def test_layer_names_are_checked_against_both_models():
    model = build_model("zoo:resnet20", {"in_channels": 1, "width": 8})
    example = torch.randn(1, 1, 16, 16)
    with pytest.raises(CompressorError, match=r"layers\[0\]\.student: the student has no layer 'layer5' \(nearest: layer"):
        pair_layers(model, model, example, [("layer5", "layer2")])
    with pytest.raises(CompressorError, match=r"layers\[1\]\.teacher: the teacher has no layer 'layer2\.0\.con1' "
                                              r"\(nearest: layer2\.0\.conv1"):
        pair_layers(model, model, example, [("layer1", "layer1"), ("layer2.0.conv1", "layer2.0.con1")])
    with pytest.raises(CompressorError, match=r"'fc' outputs shape \(1, 10\)"):
        pair_layers(model, model, example, [("fc", "fc")])
    with pytest.raises(CompressorError, match="same spatial size"):
        pair_layers(model, model, example, [("layer1", "layer2")])


@pytest.mark.parametrize("distill, message", [
    ({"logit": {"loss": "kd", "alpha": 2}}, r"logit: loss 'kd' takes no alpha \(its options: temperature\)"),
    ({"logit": {"loss": "kld"}}, r"logit\.loss: unknown logit loss 'kld' \(did you mean 'kd'\?\)"),
    ({"features": {"loss": "mse", "temperature": 2}}, r"features: loss 'mse' takes no temperature"),
    ({"features": {"layers": [{"student": "layer1", "techer": "layer1"}]}}, r"features\.layers: layers is auto or a list"),
    ({"logit": None}, r"passes\[0\]: give logit or features"),
])
def test_recipe_errors_name_the_key_and_the_fix(distill, message):
    raw = {"name": "x", "model": {"source": "zoo:resnet20"}, "passes": [{"type": "distill", **distill}]}
    with pytest.raises(CompressorError, match=message):
        parse_recipe(raw)


def run(tmp_path, recipe: dict, passes: list[dict], name: str):
    doc = {**recipe, "passes": passes}
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / f"{name}.yaml", doc)), "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    return tmp_path / name


def metrics_of(run_dir, folder: str) -> dict:
    return json.loads((run_dir / folder / "state.json").read_text())["records"][-1]["metrics"]


def onnx_structure(path) -> tuple:
    graph = onnx.load(str(path)).graph
    return ([(n.op_type, list(n.input), list(n.output)) for n in graph.node],
            {i.name: tuple(i.dims) for i in graph.initializer})


def test_feature_distillation_trains_adapters_that_never_reach_the_export(tmp_path, synthetic_recipe):
    prune, export = {"type": "prune", "ratio": 0.5}, {"type": "export_onnx", "parity_samples": 8}
    logit = {"loss": "kd", "temperature": 4.0}
    with_features = run(tmp_path, synthetic_recipe, [prune, {"type": "distill", "logit": logit, "features": {
        "loss": "cwd", "layers": "auto", "warmup": 0.5}}, export], "features")
    logits_only = run(tmp_path, synthetic_recipe, [prune, {"type": "distill", "logit": logit}, export], "logits")

    metrics = metrics_of(with_features, "01-distill")
    assert metrics["teacher"].startswith("snapshot before the first prune")
    assert metrics["adapter_init"] == "kept-channel selection"
    assert {"train_ce", "train_kd", "train_cwd", "cwd_layer1", "cwd_layer2", "cwd_layer3"} <= set(metrics)
    adapters = load_file(str(with_features / "01-distill" / "adapters.safetensors"))
    assert {k: tuple(v.shape) for k, v in adapters.items() if k.endswith("weight")} == {
        "layer1.weight": (8, 4, 1, 1), "layer2.weight": (16, 8, 1, 1), "layer3.weight": (32, 16, 1, 1)}
    assert not (logits_only / "01-distill" / "adapters.safetensors").exists()
    assert "train_cwd" not in metrics_of(logits_only, "01-distill")

    structure = onnx_structure(with_features / "model.onnx")
    assert structure == onnx_structure(logits_only / "model.onnx")
    assert not any("adapter" in name or "probe" in name for name in structure[1])
    weights = load_file(str(with_features / "01-distill" / "model.safetensors"))
    assert set(weights) == set(load_file(str(with_features / "00-prune" / "model.safetensors")))


def test_teacher_is_the_recipe_model_after_training_or_comes_from_the_recipe(tmp_path, synthetic_recipe):
    trained = run(tmp_path, synthetic_recipe, [{"type": "train", "epochs": 0.25}, {"type": "distill", "epochs": 0.25}],
                  "trained")
    assert metrics_of(trained, "01-distill")["teacher"].startswith("the recipe's model")
    doc = {**synthetic_recipe, "passes": [{"type": "distill", "epochs": 0.25}]}
    itself = runner.invoke(app, ["run", str(write_recipe(tmp_path / "itself.yaml", doc)), "--out", str(tmp_path / "i")])
    assert itself.exit_code == 2 and "would distil from itself" in itself.output, itself.output
    assert not (tmp_path / "i" / "00-distill").exists()

    wider = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 12}}
    external = run(tmp_path, synthetic_recipe, [{"type": "distill", "epochs": 0.25, "teacher": wider, "logit": None,
                                                 "features": {"loss": "mse", "layers": [{"student": "layer3", "teacher": "layer3"}]}}],
                   "external")
    metrics = metrics_of(external, "00-distill")
    assert metrics["teacher"] == "zoo:resnet20 from no checkpoint (untrained)"
    assert metrics["adapter_init"] == "default" and {"train_mse", "mse_layer3"} <= set(metrics)

    fewer_classes = {**wider, "num_classes": 5}
    doc = {**synthetic_recipe, "passes": [{"type": "distill", "teacher": fewer_classes}]}
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "classes.yaml", doc)), "--out", str(tmp_path / "classes")])
    assert result.exit_code == 2
    assert "logit: the teacher outputs shape (5,) per sample and the student (10,)" in " ".join(result.output.split())
