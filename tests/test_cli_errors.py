"""Every broken recipe gets one line naming the problem, exit code 2, and no traceback."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from compressor.cli import app
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
