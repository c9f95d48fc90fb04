"""A YOLO detector through every pass from the command line, on a few generated fmnist-detect
canvases: the task seam end to end (loss, mAP, CWD pairs, export parity, latency)."""

import json

import onnx
import pytest
from typer.testing import CliRunner

from compressor.cli import app
from compressor.state import load_checkpoint
from tests.conftest import ROOT, needs_fmnist, needs_ultralytics, write_recipe

pytestmark = needs_ultralytics
runner = CliRunner()
PICO = str(ROOT / "recipes" / "models" / "yolov8-pico.yaml")


@pytest.fixture(scope="module")
def tiny_detection_data(tmp_path_factory):
    from compressor.data.fmnist_detect import generate

    return generate(tmp_path_factory.mktemp("fmnist-detect"), train=24, val=12)


def detection_recipe(data_yaml, passes) -> dict:
    return {"name": "detect", "seed": 0, "threads": 1, "model": {"source": f"ultralytics:{PICO}", "num_classes": 10},
            "data": {"dataset": f"yolo:{data_yaml}", "image_size": 64, "batch_size": 8, "eval_batch_size": 12,
                     "workers": 0},
            "passes": passes}


@needs_fmnist
def test_a_detector_goes_through_every_pass(tmp_path, tiny_detection_data):
    passes = [{"type": "evaluate"},
              {"type": "sparse_train", "method": "bn_l1", "epochs": 1, "optimizer": "adamw", "lr": 0.001},
              {"type": "prune", "importance": "bn_scale", "global": True, "ratio": 0.4, "round_to": 8},
              {"type": "distill", "epochs": 1, "optimizer": "adamw", "lr": 0.001, "logit": None,
               "features": {"loss": "cwd", "layers": "auto"}},
              {"type": "evaluate"},
              {"type": "export_onnx"},
              {"type": "benchmark", "backends": ["onnxruntime"], "batch_sizes": [1], "iters": 3, "threads": 1}]
    path = write_recipe(tmp_path / "r.yaml", detection_recipe(tiny_detection_data, passes))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    records = report["passes"]
    evaluated = [r["metrics"] for r in records if "map50" in r["metrics"]]
    assert len(evaluated) == 2 and all(0 <= m["map50_95"] <= m["map50"] <= 100 for m in evaluated)
    assert records[-1]["macs"] <= 0.5 * records[0]["macs"]
    sparse = next(r for r in records if r["type"] == "sparse_train")["metrics"]
    assert {"train_box", "train_cls", "train_dfl"} <= set(sparse) and "train_acc" not in sparse
    distill = next(r for r in records if r["type"] == "distill")["metrics"]
    assert [p["student"] for p in distill["pairs"]] == ["model.15", "model.18", "model.21"]
    assert all(f"cwd_{p['student']}" in distill for p in distill["pairs"])
    export = next(r for r in records if r["type"] == "export_onnx")["metrics"]
    assert abs(export["onnx_map50_95"] - export["torch_map50_95"]) <= 0.2 and export["top1_agreement"] is None
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "run" / "model.onnx")).metadata_props}
    assert meta["task"] == "detect" and meta["output_name"] == "predictions" and "NMS" in meta["output_layout"]
    assert "mAP50-95" in (tmp_path / "run" / "report.md").read_text()
    # the pruned detector rebuilds from its source and pruning history, weights from safetensors
    pruned = load_checkpoint(tmp_path / "run" / "04-evaluate")
    assert sum(p.numel() for p in pruned.model.parameters()) == records[-1]["params"]


@needs_fmnist
def test_detection_data_with_a_classifier_is_one_line(tmp_path, tiny_detection_data):
    recipe = detection_recipe(tiny_detection_data, [{"type": "evaluate"}])
    recipe["model"] = {"source": "zoo:resnet20", "num_classes": 10}
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "detection model with an Ultralytics Detect head" in result.output and "Traceback" not in result.output


@needs_fmnist
def test_logit_distillation_of_a_detector_is_refused_with_the_fix(tmp_path, tiny_detection_data):
    recipe = detection_recipe(tiny_detection_data, [{"type": "prune", "ratio": 0.25},
                                                    {"type": "distill", "epochs": 0.1}])
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "set logit: null" in result.output
