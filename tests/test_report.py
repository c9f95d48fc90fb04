"""The report of a real run: report.json, report.md and report.png, and `compress report`."""

import json
import re
import shlex
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from compressor.cli import app
from compressor.recipe import parse_recipe
from compressor.report import render
from compressor.report.plot import figure
from compressor.report.provenance import caveat, tool_version, trained_weights
from compressor.runtime import tensorrt as rt
from tests.conftest import TEACHER, write_recipe

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
    command = ["run", str(recipe), "--out", str(tmp / "run")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["/venv/bin/compress", *command])  # as typed: report.md quotes it
        result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    (tmp / "run.log").write_text(result.output)
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


def test_report_md_says_when_by_what_and_that_synthetic_accuracy_means_nothing(run):
    md = (run / "report.md").read_text()
    command = shlex.join(["compress", "run", str(run.parent / "r.yaml"), "--out", str(run)])
    assert re.search(rf"Made \d{{4}}-\d\d-\d\d \d\d:\d\d UTC by compress {re.escape(tool_version())}: "
                     rf"`{re.escape(command)}`", md), md[:600]
    doc = json.loads((run / "report.json").read_text())
    threads = doc["threads"]
    assert f"input 1×16×16, {threads} CPU thread{'s' * (threads > 1)} for training and evaluation" in md
    if threads > 1:  # how they waited matters only where there are several
        assert "while they wait (" in doc["wait"] and f"for training and evaluation, {doc['wait']}." in md
    assert "> **Accuracy numbers here are meaningless**: the data is synthetic" in md
    assert "| top-1 (meaningless) |" in md and "- top-1 (meaningless) " in md
    assert "accuracy numbers here are meaningless: the data is synthetic" in (run.parent / "run.log").read_text()


def test_only_trained_weights_on_real_data_give_accuracy_that_means_something():
    def recipe(model: dict, passes=()) -> object:
        return parse_recipe({"name": "x", "model": {"source": "zoo:resnet20", **model}, "passes": list(passes)})

    assert trained_weights(recipe({"checkpoint": str(TEACHER)}))
    assert trained_weights(recipe({"source": "torchvision:resnet18", "kwargs": {"weights": "DEFAULT"}}))
    assert trained_weights(recipe({}, [{"type": "train", "epochs": 1}]))
    assert not trained_weights(recipe({"kwargs": {"width": 8}}, [{"type": "distill"}]))
    assert caveat({"dataset": "fashion-mnist", "trained_weights": True}) is None
    assert "no trained weights" in caveat({"dataset": "fashion-mnist", "trained_weights": False})


def test_the_split_a_metric_was_measured_on_shows_beside_it(run, tmp_path):
    doc = json.loads((run / "report.json").read_text())
    for record in doc["passes"]:
        if "top1" in record["metrics"]:
            record["metrics"]["split"] = "val"
    (tmp_path / "report.json").write_text(json.dumps(doc))
    render(tmp_path)
    md = (tmp_path / "report.md").read_text()
    passes, stages = md.split("## Passes")[1].split("## Stages")
    assert passes.count("% (val) |") == 2 and stages.split("## Latency")[0].count("% (val) |") == 2
    assert "points, on val)" in md


def test_png_title_fits_and_each_bar_label_reads_its_own_bar(run):
    doc = json.loads((run / "report.json").read_text())
    bench = doc["passes"][-1]["metrics"]
    fig = figure("a recipe name long enough to run off the edge of any figure " * 3, bench, caveat(doc))
    fig.draw_without_rendering()
    title, frame = fig._suptitle.get_window_extent(), fig.bbox
    assert frame.x0 <= title.x0 and title.x1 <= frame.x1 and title.y1 <= frame.y1
    bar_axes = [ax for ax in fig.axes if ax.containers]
    assert len(bar_axes) == 2  # torch at batch 1 and 4
    for ax in bar_axes:
        heights = [bar.get_height() for bar in ax.containers[0]]
        labels = [text.get_text().split("\n") for text in ax.texts]
        assert [label[0] for label in labels] == [f"{h:.3g} ms" for h in heights]
        assert [label[1] for label in labels[1:]] == [f"{heights[0] / h:.2f}× as fast" for h in heights[1:]]
    assert "meaningless" in fig.axes[0].get_title() and "(meaningless)" in fig.axes[0].get_ylabel()


def test_latency_table_in_a_file_keeps_long_backend_and_stage_names_whole(run, tmp_path):
    text = (run / "report.json").read_text().replace('"torch"', '"onnxruntime-tensorrt"')
    (tmp_path / "report.json").write_text(text.replace('"01-prune"', '"02-semi_structured"'))
    result = runner.invoke(app, ["report", str(tmp_path)])  # not a terminal: the console is 120 columns
    assert result.exit_code == 0, result.output
    latency = result.output[result.output.index("latency"):]
    rows = [line for line in latency.splitlines() if line.startswith("│")]
    assert len(rows) == 4 and all("onnxruntime-tensorrt" in row for row in rows)
    assert sum("02-semi_structured" in row for row in rows) == 2 and "…" not in result.output
