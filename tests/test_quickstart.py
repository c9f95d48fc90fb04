"""The quickstart end to end on real Fashion-MNIST with the committed teacher."""

import json

import onnx
import pytest
from typer.testing import CliRunner

from compressor.cli import app
from compressor.runtime.latency import unsteady
from tests.conftest import ROOT, needs_fmnist, needs_teacher

runner = CliRunner()
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def run_quickstart(out, *overrides):
    sets = [arg for o in overrides for arg in ("--set", o)]
    result = runner.invoke(app, ["run", str(QUICKSTART), "--out", str(out), *sets])
    assert result.exit_code == 0, result.output
    return result.output, json.loads((out / "report.json").read_text())["passes"]


@needs_fmnist
@needs_teacher
def test_quickstart_fast_variant(tmp_path):
    """Every stage on a slice of the data: structure, files and measured numbers are there."""
    output, records = run_quickstart(tmp_path, "data.train_samples=1024", "data.eval_samples=500",
                                     "passes.5.iters=5", "passes.5.warmup=2")
    assert [r["type"] for r in records][1:] == ["evaluate", "prune", "distill", "evaluate", "export_onnx", "benchmark"]
    assert records[0]["macs"] / records[-1]["macs"] >= 2
    onnx_model = onnx.load(str(tmp_path / "model.onnx"))
    assert {p.key for p in onnx_model.metadata_props} >= {"recipe", "preprocessing", "num_classes"}
    latency = records[-1]["metrics"]["latency"]
    assert {(r["backend"], r["batch_size"]) for r in latency} == {(b, n) for b in ("onnxruntime", "torch") for n in (1, 32)}
    assert "faster" in output and "top-1" in output


@needs_fmnist
@needs_teacher
@pytest.mark.slow
def test_quickstart_meets_its_promise(tmp_path):
    """The README's claim, measured: teacher ≥ 92%, ≥ 2× fewer MACs, ≤ 0.5 points lost, a real speedup."""
    _, records = run_quickstart(tmp_path, "passes.5.iters=20")
    accuracies = [r["metrics"]["top1"] for r in records if "top1" in r["metrics"]]
    teacher, student = accuracies[0], accuracies[-1]
    assert teacher >= 92.0
    assert records[0]["macs"] / records[-1]["macs"] >= 2.0
    assert teacher - student <= 0.5, (teacher, student)
    ort = [r for r in records[-1]["metrics"]["latency"] if r["backend"] == "onnxruntime" and r["stage"] != "unmodified"]
    assert {r["batch_size"] for r in ort} == {1, 32}
    # A measurement the benchmark itself flags as unsteady (a busy shared machine) proves nothing either way.
    assert all(r["speedup"] > 1.0 or unsteady(r) for r in ort), [(r["batch_size"], r["speedup"], r["speedup_iqr"],
                                                                  r["baseline_ms"], r["compressed_ms"]) for r in ort]
