"""The report of a real run: report.json, report.md and report.png, and `compress report`."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from compressor.cli import app
from compressor.report import render
from compressor.runtime import tensorrt as rt
from tests.conftest import write_recipe

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """prune → 2:4 → recover → export → benchmark on a tiny model: one stage before pruning, one after."""
    tmp = tmp_path_factory.mktemp("report")
    recipe = write_recipe(tmp / "r.yaml", {
        "name": "tiny",
        "model": {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}},
        "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "train_samples": 64, "eval_samples": 64,
                 "batch_size": 32},
        "passes": [
            {"type": "evaluate"},
            {"type": "prune", "ratio": 0.5},
            {"type": "semi_structured"},
            {"type": "train", "epochs": 1, "lr": 0.01},
            {"type": "evaluate"},
            {"type": "export_onnx", "dynamo": False},  # the faster exporter: this file tests the report
            {"type": "export_tensorrt", "precision": "fp32"},
            {"type": "benchmark", "backends": ["torch"], "batch_sizes": [1, 4], "warmup": 1, "iters": 6, "threads": 1},
        ],
    })
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp / "run")])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_report_json_has_a_record_per_pass_and_the_stages_timed(run):
    doc = json.loads((run / "report.json").read_text())
    assert doc["recipe"] == "tiny" and [r["type"] for r in doc["passes"]] == [
        "input", "evaluate", "prune", "semi_structured", "train", "evaluate", "export_onnx", "export_tensorrt",
        "benchmark"]
    bench = doc["passes"][-1]["metrics"]
    assert [(s["name"], s["passes"]) for s in bench["stages"]] == [
        ("unmodified", ["00-evaluate"]),
        ("01-prune", ["01-prune", "02-semi_structured", "03-train", "04-evaluate", "05-export_onnx",
                      "06-export_tensorrt"])]
    assert bench["stages"][1]["top1"] == doc["passes"][5]["metrics"]["top1"]  # the accuracy after recovery
    assert [(r["batch_size"], r["stage"]) for r in bench["latency"]] == [(1, "01-prune"), (4, "01-prune")]


def test_report_md_and_png_are_there_to_read(run):
    md = (run / "report.md").read_text()
    for heading in ("# tiny", "## Passes", "## Stages", "## Latency", "![accuracy vs latency"):
        assert heading in md
    latency = md[md.index("## Latency"):]
    assert "of MACs ratio" in latency and latency.count("| torch |") == 4
    if rt.unavailable_reason():
        assert f"06-export_tensorrt: skipped: {rt.unavailable_reason()}" in md
    # Both cuts show: fewer MACs in the stages table, the 2:4 masks in the notes.
    assert "× fewer)" in md and "- 02-semi_structured: 2:4 sparse: " in md and "of their weights zero" in md
    with Image.open(run / "report.png") as png:
        assert png.format == "PNG" and png.width > 1000 and png.height > 400


def test_compress_report_renders_again(run, tmp_path):
    before = (run / "report.md").read_text()
    (run / "report.md").unlink()
    (run / "report.png").unlink()
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "report.md").read_text() == before and (run / "report.png").is_file()
    assert "of MACs ratio" in result.output

    missing = runner.invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "report.json does not exist" in missing.output


def test_a_run_without_benchmark_reports_its_passes_only(run, tmp_path):
    doc = json.loads((run / "report.json").read_text())
    doc["passes"] = doc["passes"][:-1]
    (tmp_path / "report.json").write_text(json.dumps(doc))
    render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Passes" in md and "## Latency" not in md and not (tmp_path / "report.png").exists()
