"""Every broken recipe gets one line naming the problem, exit code 2, and no traceback; the
command line's own mistakes exit 64, Ctrl-C 130, a failure inside a run 1."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from compressor.cli import app
from compressor.errors import EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_USAGE
from tests.conftest import write_recipe

runner = CliRunner()


def broken(tmp_path, synthetic_recipe, case):
    doc = synthetic_recipe
    extra = []
    if case == "unknown key":
        doc["passes"][1]["ration"] = 0.5
    elif case == "misspelt pass type":
        doc["passes"][1]["type"] = "prnue"
    elif case == "wrong value type":
        doc["data"]["batch_size"] = "many"
    elif case == "missing file":
        return [str(tmp_path / "absent.yaml")]
    elif case == "bad --set path":
        extra = ["--set", "passes.7.ratio=0.2"]
    elif case == "unreadable yaml":
        path = tmp_path / "r.yaml"
        path.write_text("name: x\npasses: [\n  - type: train\n")
        return [str(path)]
    elif case == "checkpoint mismatch":
        wrong = torch.nn.Linear(3, 3).state_dict()
        save_file(wrong, str(tmp_path / "w.safetensors"))
        doc["model"]["checkpoint"] = str(tmp_path / "w.safetensors")
    elif case == "missing checkpoint":
        doc["model"]["checkpoint"] = str(tmp_path / "nowhere.safetensors")
    elif case == "missing teacher checkpoint":
        doc["passes"].append({"type": "distill", "teacher": {**doc["model"], "checkpoint": "nowhere.safetensors"}})
    elif case == "unknown model":
        doc["model"]["source"] = "torchvision:resnet181"
    return [str(write_recipe(tmp_path / "r.yaml", doc)), *extra]


CASES = {
    "unknown key": "passes[1]: unknown key 'ration' (did you mean 'ratio'?)",
    "misspelt pass type": "passes[1].type: unknown pass type 'prnue' (did you mean 'prune'?)",
    "wrong value type": "data.batch_size: input should be a valid integer",
    "missing file": "absent.yaml' does not exist",
    "bad --set path": "--set passes.7.ratio: '7' is not an index of passes",
    "unreadable yaml": "not valid YAML at line",
    "checkpoint mismatch": "does not match the model: missing",
    "missing checkpoint": "model.checkpoint: file",
    "missing teacher checkpoint": "passes[4].teacher.checkpoint: file 'nowhere.safetensors' does not exist",
    "unknown model": "unknown torchvision model 'resnet181' (did you mean 'resnet18'?)",
}


@pytest.mark.parametrize("case", CASES)
def test_broken_recipe_gives_one_clear_line(tmp_path, synthetic_recipe, case):
    args = broken(tmp_path, synthetic_recipe, case)
    result = runner.invoke(app, ["run", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and CASES[case] in lines[0], lines[0]


def test_validate_reports_errors_the_same_way(tmp_path, synthetic_recipe):
    args = broken(tmp_path, synthetic_recipe, "unknown key")
    result = runner.invoke(app, ["validate", *args])
    assert result.exit_code == 2 and "did you mean 'ratio'" in result.output


def test_real_console_script_exit_code(tmp_path, synthetic_recipe):
    """The installed `compress` entry point, not just the Typer app, exits 2 without a traceback."""
    args = broken(tmp_path, synthetic_recipe, "misspelt pass type")
    done = subprocess.run([sys.executable, "-m", "compressor", "validate", *args], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert "did you mean 'prune'" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "r.yaml", "--bogus"], "No such option: --bogus"),
    (["run"], "Missing argument"),
    (["export", "runs/x", "--format", "tar"], "Invalid value for '--format'"),
    (["run", "r.yaml", "--threads", "0"], "Invalid value for '--threads'"),
])
def test_usage_errors_exit_64_with_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_USAGE, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and message in line and "--help" in line, line


def test_usage_error_in_json_mode_is_json(tmp_path):
    result = runner.invoke(app, ["validate", "r.yaml", "--json", "--bogus"])
    assert result.exit_code == EXIT_USAGE
    assert json.loads(result.stdout) == {"error": "No such option: --bogus (see root validate --help)",
                                         "exit_code": EXIT_USAGE}


def test_real_console_script_usage_exit_code():
    done = subprocess.run([sys.executable, "-m", "compressor", "run", "--bogus"], capture_output=True, text=True)
    assert done.returncode == EXIT_USAGE and done.stdout == ""
    assert done.stderr.strip() == "error: No such option: --bogus (Possible options: --out) (see compress run --help)"


def own_model_raising(tmp_path, monkeypatch, synthetic_recipe, exception: str):
    """A recipe whose own python: factory raises `exception` when the run builds the model."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = f"raises_{exception.lower()}"
    (tmp_path / f"{module}.py").write_text(f"def build(num_classes=10):\n    raise {exception}('from the factory')\n")
    synthetic_recipe["model"] = {"source": f"python:{module}:build"}
    return [str(write_recipe(tmp_path / "r.yaml", synthetic_recipe)), "--out", str(tmp_path / "run")]


def test_ctrl_c_exits_130(tmp_path, monkeypatch, synthetic_recipe):
    args = own_model_raising(tmp_path, monkeypatch, synthetic_recipe, "KeyboardInterrupt")
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == EXIT_INTERRUPTED and "interrupted" in result.output, result.output


def test_unexpected_failure_exits_1_with_its_traceback(tmp_path, monkeypatch, synthetic_recipe):
    result = runner.invoke(app, ["run", *own_model_raising(tmp_path, monkeypatch, synthetic_recipe, "RuntimeError")])
    assert result.exit_code == EXIT_FAILED and isinstance(result.exception, RuntimeError)


def test_run_json_is_the_report_on_stdout(tmp_path, synthetic_recipe):
    synthetic_recipe["passes"] = [{"type": "evaluate"}]
    path = write_recipe(tmp_path / "r.yaml", synthetic_recipe)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["run_dir"] == str(tmp_path / "run") and [p["type"] for p in report["passes"]] == ["input", "evaluate"]
    assert "report:" in result.stderr  # the human summary, out of the JSON's way
    again = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--json"])
    assert again.exit_code == EXIT_INPUT and "already holds a run" in json.loads(again.stdout)["error"]


def test_inspect_json(tmp_path):
    result = runner.invoke(app, ["inspect", "zoo:mlp", "--input-shape", "1,8,8", "--arg", "image_size=8",
                                 "--arg", "hidden=16", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["input_shape"] == [1, 8, 8] and doc["params"] > 0
    assert {g["root"] for g in doc["survey"]["groups"] if g["reason"] is None} == {"1", "3"}
