"""`compress inspect` (model source, recipe, run folder, ONNX file) and `compress analyze`."""

import json

import torch.nn as nn
import yaml
from typer.testing import CliRunner

from compressor.cli import app
from compressor.models import build_model
from compressor.passes.prune import PruneParams
from compressor.pipeline import Pipeline
from compressor.recipe import parse_recipe
from compressor.runtime import onnx as ox
from tests.conftest import TEACHER, needs_fmnist, needs_teacher, write_recipe

RESNET20 = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}}


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), terminal_width=200)
    assert "Traceback" not in result.output, result.output
    return result


def test_inspect_model_source_lists_groups_and_protected_layers():
    result = invoke("inspect", "zoo:resnet20", "--input-shape", "1,28,28", "--arg", "in_channels=1",
                    "--arg", "num_classes=10", "--ignore", "layer2.0.conv1")
    assert result.exit_code == 0, result.output
    assert "prunable channel groups (11)" in result.output
    assert "layer3.0.conv2" in result.output and "layer3.0.downsample.0" in result.output
    assert "fc" in result.output and "its channels are the model's output" in result.output
    assert "ignore: 'layer2.0.conv1' covers 'layer2.0.conv1'" in result.output


def test_inspect_names_heads_and_the_view_it_cannot_follow():
    vit = invoke("inspect", "python:torchvision.models.vision_transformer:VisionTransformer",
                 "--input-shape", "3,32,32", "--arg", "image_size=32", "--arg", "patch_size=8", "--arg", "num_layers=2",
                 "--arg", "num_heads=4", "--arg", "hidden_dim=32", "--arg", "mlp_dim=64")
    assert vit.exit_code == 0, vit.output
    assert "encoder.layers.encoder_layer_1.self_attention │     4" in vit.output
    assert "embedding width of attention" in vit.output
    shuffle = invoke("inspect", "torchvision:shufflenet_v2_x0_5", "--input-shape", "3,32,32")
    assert shuffle.exit_code == 2
    assert "cannot map channels through the view at torchvision/models/shufflenetv2.py" in shuffle.output


def test_inspect_rejects_what_it_cannot_read(tmp_path):
    assert "neither a model source" in invoke("inspect", "resnet50").output
    assert "--input-shape '3,x' must be" in invoke("inspect", "zoo:resnet20", "--input-shape", "3,x").output
    assert "holds no checkpoint" in invoke("inspect", str(tmp_path)).output


def test_inspect_run_folder_and_onnx_file(tmp_path):
    recipe = parse_recipe({"name": "t", "device": "cpu", "model": RESNET20,
                           "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "train_samples": 32,
                                    "eval_samples": 16},
                           "passes": [{"type": "prune", "ratio": 0.5}]})
    state = Pipeline(recipe, tmp_path / "run").run(fresh=True)
    run = invoke("inspect", str(tmp_path / "run"))
    assert run.exit_code == 0, run.output
    assert "after" in run.output and "00-prune" in run.output and "│        4 │" in run.output
    path = tmp_path / "m.onnx"
    ox.export(state.model, (1, 16, 16), path, dynamo=False)
    onnx = invoke("inspect", str(path))
    assert onnx.exit_code == 0, onnx.output
    assert "N:M" in onnx.output and "dense" in onnx.output


@needs_fmnist
@needs_teacher
def test_analyze_writes_table_plot_and_ratios_a_prune_pass_accepts(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", {
        "name": "sens", "device": "cpu",
        "model": {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 16},
                  "checkpoint": str(TEACHER)},
        "data": {"dataset": "fashion-mnist"},
        "passes": [{"type": "prune", "ignore": ["layer1.*", "layer3.*"], "round_to": 8}]})
    out = tmp_path / "sens"
    result = invoke("analyze", str(path), "--ratios", "0.5,0.6", "--max-drop", "2", "--samples", "300",
                    "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"sensitivity.json", "sensitivity.md", "sensitivity.png", "ratios.yaml"}
    report = json.loads((out / "sensitivity.json").read_text())
    assert json.loads(result.stdout) == report  # --json: stdout is the results alone
    assert report["samples"] == 300 and report["complete"] and report["split"] == "validation"
    assert "on the first 300 validation images" in result.stderr  # chosen on held-out training images, not test
    units = {row["unit"] for row in report["rows"]}
    assert units == {"layer2.0.conv1", "layer2.0.conv2", "layer2.1.conv1", "layer2.2.conv1"}
    assert all(0 < row["macs_saved"] < 0.5 for row in report["rows"])
    # round_to 8 keeps 16 of the 32 channels at 0.6 as at 0.5: the same model, marked and not evaluated again.
    again = [row for row in report["rows"] if row["ratio"] == 0.6]
    assert again and all(row["same_as"] == 0.5 for row in again) and "0.6 → as 0.5" in result.stderr
    suggestion = yaml.safe_load((out / "ratios.yaml").read_text())
    PruneParams(type="prune", **suggestion)  # pastes into a prune pass as it is
    assert set(suggestion.get("ratios", {})) | set(suggestion.get("ignore", [])) == units
    # Halving the residual width of a stage costs tens of points: measured 54 at 0.5.
    assert "layer2.0.conv2" in suggestion["ignore"]


def test_analyze_checks_its_options(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", {"name": "x", "model": RESNET20, "data": {"dataset": "synthetic"}})
    assert "--ratios '0,1.5' must be fractions" in invoke("analyze", str(path), "--ratios", "0,1.5").output


EVALUATION_BATCHES = []  # whole evaluation batches run, by any copy of the model (pruning copies it)


class InterruptedAt(nn.Module):
    """A small classifier whose user presses Ctrl-C during its `batch`-th evaluation batch."""

    def __init__(self, batch: int):
        super().__init__()
        self.net = build_model("zoo:resnet20", {"in_channels": 1, "width": 8, "num_classes": 10})
        self.batch = batch

    def forward(self, x):
        if len(x) > 1:  # tracing and counting MACs run one example; evaluation the whole batch
            EVALUATION_BATCHES.append(len(x))
            if len(EVALUATION_BATCHES) == self.batch:
                raise KeyboardInterrupt
        return self.net(x)


def test_an_interrupted_analyze_keeps_the_units_it_finished(tmp_path):
    EVALUATION_BATCHES.clear()
    # Evaluations: the unpruned model, the first unit, then Ctrl-C in the second unit's.
    path = write_recipe(tmp_path / "r.yaml", {
        "name": "x", "device": "cpu", "model": {"source": f"python:{__name__}:InterruptedAt", "kwargs": {"batch": 3}},
        "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "eval_samples": 8}})
    result = invoke("analyze", str(path), "--ratios", "0.5", "--out", str(tmp_path / "sens"))
    assert result.exit_code == 130, result.output
    partial = json.loads((tmp_path / "sens" / "sensitivity.json").read_text())
    assert not partial["complete"] and partial["samples"] == 8 and "suggestion" not in partial
    assert [(row["unit"], row["ratio"]) for row in partial["rows"]] == [("net.conv1", 0.5)]
