"""Run folders, checkpoints after every pass, and resume after a SIGKILL."""

import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from compressor.cli import app
from tests.conftest import write_recipe

runner = CliRunner()


def compress(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "compressor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=cwd)


def summary(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    return [(r["type"], r["macs"], r["params"]) for r in report["passes"]]


def test_run_writes_one_folder_per_pass(tmp_path, synthetic_recipe):
    path = write_recipe(tmp_path / "r.yaml", synthetic_recipe)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("0*")) == ["00-evaluate", "01-prune", "02-train", "03-evaluate"]
    for folder in run.glob("0*"):
        assert {"model.safetensors", "state.json"} <= {p.name for p in folder.iterdir()}
    assert (run / "recipe.yaml").is_file() and (run / "report.md").is_file()
    records = json.loads((run / "report.json").read_text())["passes"]
    assert records[0]["type"] == "input" and records[2]["macs"] < records[0]["macs"] / 2
    assert not list(run.glob(".*partial"))

    again = runner.invoke(app, ["run", str(path), "--out", str(run)])
    assert again.exit_code == 2 and "--resume" in again.output


@pytest.mark.parametrize("kill_in", ["01-prune", "02-train"])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, synthetic_recipe, kill_in):
    synthetic_recipe["data"]["train_samples"] = 1024  # a train pass long enough to be caught in the act
    path = write_recipe(tmp_path / "r.yaml", synthetic_recipe)
    reference = compress("run", str(path), "--out", str(tmp_path / "ref"))
    assert reference.wait() == 0, reference.stdout.read()

    victim = compress("run", str(path), "--out", str(tmp_path / "run"))
    partial = tmp_path / "run" / f".{kill_in}.partial"
    deadline = time.time() + 120
    while not partial.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "run" / kill_in / "state.json").exists()

    resumed = compress("run", str(path), "--out", str(tmp_path / "run"), "--resume")
    output = resumed.communicate()[0]
    assert resumed.returncode == 0, output
    assert "resuming" in output or kill_in == "00-evaluate"
    assert summary(tmp_path / "run") == summary(tmp_path / "ref")


def test_resume_refuses_a_changed_recipe(tmp_path, synthetic_recipe):
    path = write_recipe(tmp_path / "r.yaml", synthetic_recipe)
    assert runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")]).exit_code == 0
    changed = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--resume",
                                  "--set", "passes.1.ratio=0.25"])
    assert changed.exit_code == 2
    assert "passes[1] (prune) or something before it changed" in changed.output
    unchanged = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--resume"])
    assert unchanged.exit_code == 0, unchanged.output


def test_after_a_training_pass_each_heading_says_how_much_training_the_run_has_left(tmp_path, synthetic_recipe):
    synthetic_recipe["passes"] += [{"type": "train", "epochs": 2}, {"type": "evaluate"}]
    path = write_recipe(tmp_path / "r.yaml", synthetic_recipe)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    rate = json.loads((tmp_path / "run" / "report.json").read_text())["passes"][3]["metrics"]["img_per_s"]
    ahead = re.findall(r"(?:under a minute|about \d+ min) of training left in this run \((\d+) epochs at the (\d+) "
                       r"img/s", result.output)
    # Before 03-evaluate and 04-train, at the first train pass's speed; none before it (nothing measured
    # yet) and none at 05-evaluate (nothing trains after it).
    assert ahead == [("2", str(round(rate)))] * 2, result.output
