"""The checks before a run (compressor.preflight), through `compress validate` and `compress run`:
every problem at once, one line each, nothing built or run first."""

import json
import sys
import urllib.error

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from compressor.cli import app
from compressor.errors import CompressorError, Problems
from compressor.recipe import load_recipe
from tests.conftest import HAS_ULTRALYTICS, write_recipe

runner = CliRunner()


def problems_of(tmp_path, doc) -> list[str]:
    try:
        load_recipe(write_recipe(tmp_path / "r.yaml", doc))
    except Problems as e:
        return e.lines
    except CompressorError as e:
        return [str(e)]
    return []


def test_validate_names_every_problem_at_once(tmp_path, synthetic_recipe):
    doc = synthetic_recipe
    doc["model"]["checkpoint"] = "nowhere.safetensors"
    doc["data"]["batch_size"] = "many"
    doc["passes"][1]["ration"] = 0.5
    doc["passes"][2]["epochs"] = -1
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", doc))])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert all(line.startswith(f"error: {tmp_path / 'r.yaml'}: ") for line in lines), lines
    wanted = ["data.batch_size: input should be a valid integer", "passes[1]: unknown key 'ration'",
              "passes[2].epochs: input should be greater than or equal to 0",
              "model.checkpoint: file 'nowhere.safetensors' does not exist"]  # checked though the passes are wrong
    assert len(lines) == len(wanted) and all(any(w in line for line in lines) for w in wanted), lines
    assert "more problem" not in result.output


@pytest.mark.parametrize("passes, problem", [
    (["export_tensorrt"], "passes[0] (export_tensorrt): export_tensorrt builds from the run's ONNX: put export_onnx"),
    (["distill"], "passes[0] (distill): distill has no teacher to learn from"),
    (["evaluate", "distill"], "passes[1] (distill): distill has no teacher"),
    (["semi_structured", "prune"], "passes[1] (prune): prune cannot follow semi_structured"),
    ([{"type": "sparse_train", "method": "nm"}, "prune"], "passes[1] (prune): prune cannot follow"),
    (["export_onnx", "export_tensorrt"], None),
    (["prune", "distill"], None),
    (["train", "distill"], None),
    ([{"type": "sparse_train", "method": "bn_l1"}, "prune"], None),
    ([{"type": "distill", "teacher": {"source": "zoo:resnet20"}}], None),
    (["benchmark"], None),  # it exports its own ONNX for onnxruntime
])
def test_pass_order(tmp_path, synthetic_recipe, passes, problem):
    synthetic_recipe["passes"] = [p if isinstance(p, dict) else {"type": p} for p in passes]
    found = problems_of(tmp_path, synthetic_recipe)
    assert [problem in line for line in found] == ([True] if problem else []), found


def test_run_stops_before_the_first_pass(tmp_path, synthetic_recipe):
    synthetic_recipe["passes"] = [{"type": "evaluate"}, {"type": "export_tensorrt"}]
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", synthetic_recipe)), "--out", str(out)])
    assert result.exit_code == 2 and "put export_onnx before it" in result.output, result.output
    assert not out.exists()  # the evaluate before it never ran


def test_model_sources_and_checkpoints(tmp_path, monkeypatch, synthetic_recipe):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the recipe's folder, added for its python: source
    (tmp_path / "garbage.safetensors").write_bytes(b"not a header at all")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "fine.safetensors"))
    (tmp_path / "mymodels.py").write_text("import torch\n\ndef build(**kwargs):\n    return torch.nn.Linear(2, 2)\n")
    teachers = [
        ({"source": "zoo:resnet2"}, "unknown zoo model 'resnet2' (did you mean 'resnet20'?)"),
        ({"source": "torchvision:resnet181"}, "unknown torchvision model 'resnet181' (did you mean 'resnet18'?)"),
        ({"source": "torchvision:resnet18", "kwargs": {"weights": "IMAGENET9K"}}, "has no weights 'IMAGENET9K'"),
        ({"source": "resnet18"}, "needs a prefix"),
        ({"source": "python:nosuchmodule:build"}, "cannot import 'nosuchmodule'"),
        ({"source": "python:mymodels:biuld"}, "has no function 'biuld' (did you mean 'build'?)"),
        ({"source": "ultralytics:nosuch.yaml"}, "nosuch.yaml" if HAS_ULTRALYTICS else "needs Ultralytics"),
        ({"source": "ultralytics:nosuch.pt"}, "file 'nosuch.pt' does not exist"),
        ({"source": "zoo:resnet20", "checkpoint": "garbage.safetensors"}, "is not a readable safetensors file"),
        ({"source": "python:mymodels:build", "checkpoint": "fine.safetensors"}, None),
    ]
    synthetic_recipe["passes"] = [{"type": "prune"}] + [{"type": "distill", "teacher": t} for t, _ in teachers]
    found = problems_of(tmp_path, synthetic_recipe)
    for i, (_, problem) in enumerate(teachers, start=1):
        mine = [line for line in found if f": passes[{i}].teacher" in line]
        assert [problem in line for line in mine] == ([True] if problem else []), (problem, found)


def test_timm_names_are_checked(tmp_path, synthetic_recipe):
    pytest.importorskip("timm")
    synthetic_recipe["model"] = {"source": "timm:resnet5"}
    assert "unknown timm model 'resnet5' (did you mean 'resnet50'?)" in problems_of(tmp_path, synthetic_recipe)[0]


def folders(root, *paths):
    for path in paths:
        (root / path).mkdir(parents=True)
    return root


@pytest.mark.parametrize("case, problem", [
    ("imagefolder missing", "is no folder"),
    ("imagefolder without val", "needs a 'val/' folder"),
    ("imagefolder without classes", "has no class folders"),
    ("imagefolder", None),
    ("yolo missing", "does not exist"),
    ("yolo without its val images", "val 'images/val' does not exist"),
    ("yolo", None),
    ("fashion-mnist root without files", "has no Fashion-MNIST idx files"),
])
def test_data_files(tmp_path, synthetic_recipe, case, problem):
    data = tmp_path / "data"
    if case.startswith("imagefolder"):
        layout = {"imagefolder missing": [], "imagefolder without val": ["train/cat"],
                  "imagefolder without classes": ["train/cat", "val"], "imagefolder": ["train/cat", "val/cat"]}[case]
        synthetic_recipe["data"] = {"dataset": f"imagefolder:{folders(data, *layout) if layout else data}"}
    elif case.startswith("yolo"):
        if case != "yolo missing":
            folders(data, "images/train", *([] if "without" in case else ["images/val"]))
            (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [box]\n")
        synthetic_recipe["data"] = {"dataset": f"yolo:{data / 'data.yaml'}"}
    else:
        synthetic_recipe["data"] = {"dataset": "fashion-mnist", "root": str(folders(data, "."))}
    found = problems_of(tmp_path, synthetic_recipe)
    assert [": data: " in line and problem in line for line in found] == ([True] if problem else []), found


def test_validate_json(tmp_path, synthetic_recipe):
    path = write_recipe(tmp_path / "r.yaml", synthetic_recipe)
    result = runner.invoke(app, ["validate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] and doc["resolved"]["passes"][1]["ratio"] == 0.5 and "ok" in result.stderr
    synthetic_recipe["passes"].append({"type": "export_tensorrt", "precision": "fp8"})
    result = runner.invoke(app, ["validate", str(write_recipe(path, synthetic_recipe)), "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == doc["exit_code"] == 2 and "passes[4].precision" in doc["error"], result.stdout
    assert len(doc["problems"]) == 1 and "error:" in result.stderr


@pytest.mark.parametrize("beside", ["recipe", "cwd"])
def test_own_model_module_is_found_beside_the_recipe_or_in_the_current_folder(tmp_path, monkeypatch, synthetic_recipe,
                                                                              beside):
    """python:MODULE:build needs no PYTHONPATH when MODULE.py is beside the recipe or where compress runs."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # what the run adds to it goes again after the test
    module = f"own_net_{beside}"
    recipe_dir, cwd = folders(tmp_path, "recipes", "work") / "recipes", tmp_path / "work"
    monkeypatch.chdir(cwd)
    (recipe_dir if beside == "recipe" else cwd).joinpath(f"{module}.py").write_text(
        "from compressor.models.zoo import mlp\n\ndef build(num_classes=10):\n"
        "    return mlp(num_classes, in_channels=1, image_size=16, hidden=8)\n")
    synthetic_recipe["model"] = {"source": f"python:{module}:build", "num_classes": 10}
    synthetic_recipe["passes"] = [{"type": "evaluate"}]
    path = write_recipe(recipe_dir / "r.yaml", synthetic_recipe)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == f"python:{module}:build" and report["passes"][-1]["metrics"]["top1"] >= 0


def test_torchvision_weights_offline_is_one_line(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)  # the network, not the code under test
    result = runner.invoke(app, ["inspect", "torchvision:resnet18", "--arg", "weights=DEFAULT"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in line, line
    assert f"put resnet18-f37072fd.pth in {tmp_path / 'hub' / 'checkpoints'}" in line and "model.checkpoint" in line


def test_timm_pretrained_offline_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty Hub cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the network, not the code under test
    result = runner.invoke(app, ["inspect", "timm:resnet18", "--arg", "pretrained=true"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert "timm:resnet18 pretrained weights could not be fetched" in line and "model.checkpoint" in line, line
    assert f"put them in the Hub cache ({tmp_path})" in line, line
