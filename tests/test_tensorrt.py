"""TensorRT: build plans for 10.x and 11.x, build_engine.sh where TensorRT is absent (its flags and
its choice of command by the target's trtexec version), and real engines where TensorRT and a GPU are."""

import os
import subprocess
from pathlib import Path

import onnx
import pytest
import torch

from compressor.errors import CompressorError
from compressor.passes.export_tensorrt import ExportTensorRT
from compressor.pipeline import RunContext
from compressor.recipe import parse_recipe
from compressor.runtime import onnx as ox
from compressor.runtime import tensorrt as rt
from compressor.runtime.backends import Candidate, Settings
from compressor.runtime.compare import measure
from compressor.state import State

HERE = rt.unavailable_reason()
without_tensorrt = pytest.mark.skipif(HERE is None, reason="TensorRT and a GPU are here: the pass builds an engine")
with_tensorrt = pytest.mark.skipif(HERE is not None, reason=f"needs TensorRT 10/11 and an NVIDIA GPU: {HERE}")

TINY = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}}
SHAPES = "--minShapes=input:1x1x16x16 --optShapes=input:8x1x16x16 --maxShapes=input:32x1x16x16"


def test_plans_follow_the_tensorrt_major_version():
    ten = rt.plan_build(10, "fp16", False, "model.onnx", "model.fp16.onnx")
    assert (ten.onnx_file, ten.builder_flags, ten.trtexec_flags()) == ("model.onnx", ("FP16",), ["--fp16"])
    assert rt.plan_build(10, "int8", True, "m.onnx", "m16.onnx").builder_flags == ("INT8", "FP16", "SPARSE_WEIGHTS")
    eleven = rt.plan_build(11, "fp16", True, "model.onnx", "model.fp16.onnx")
    assert (eleven.onnx_file, eleven.builder_flags) == ("model.fp16.onnx", ("SPARSE_WEIGHTS",))
    assert rt.plan_build(11, "fp32", False, "model.onnx", "model.fp16.onnx").onnx_file == "model.onnx"
    with pytest.raises(CompressorError, match="int8 on TensorRT 11 needs Q/DQ"):
        rt.plan_build(11, "int8", False, "model.onnx", "model.fp16.onnx")
    with pytest.raises(CompressorError, match="TensorRT 8.x is not supported"):
        rt.plan_build(8, "fp16", False, "model.onnx", "model.fp16.onnx")


@pytest.fixture
def exported(tmp_path):
    """A run folder holding the ONNX that export_onnx would have written."""
    data = {"dataset": "synthetic", "channels": 1, "image_size": 16, "eval_samples": 64, "batch_size": 16}
    ctx = RunContext(parse_recipe({"name": "tiny", "model": TINY, "data": data}), tmp_path, torch.device("cpu"))
    state = State(ctx.baseline(), {"source": TINY["source"], "kwargs": {}}, (1, 16, 16))
    ox.export(state.model, state.input_shape, tmp_path / "model.onnx", dynamo=False)
    state.artifacts["onnx"] = "model.onnx"  # as export_onnx names it: a file in the run folder
    return state, ctx


def export_tensorrt(state, ctx, **params) -> dict:
    pass_params = ExportTensorRT.Params.model_validate({"type": "export_tensorrt", **params})
    return ExportTensorRT(pass_params).run(state, ctx)


@without_tensorrt
def test_without_tensorrt_the_pass_writes_build_engine_sh(exported):
    state, ctx = exported
    metrics = export_tensorrt(state, ctx, precision="fp16", sparse_weights=True)
    assert metrics["skipped"] == "no TensorRT here"
    script = ctx.run_dir / "build_engine.sh"
    assert os.access(script, os.X_OK) and subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = script.read_text().splitlines()
    ten, eleven = (next(line for line in lines if line.startswith(f"  {major})")) for major in (10, 11))
    assert "--onnx=model.onnx" in ten and "--fp16" in ten and "--sparsity=enable" in ten and SHAPES in ten
    assert "--onnx=model.fp16.onnx" in eleven and "--fp16" not in eleven  # 11.x takes fp16 from the ONNX
    assert "--sparsity=enable" in eleven and SHAPES in eleven
    # The ONNX the 11.x branch reads: fp16 weights inside, float32 input and output as before.
    fp16 = onnx.load(str(ctx.run_dir / "model.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert metrics["fp16_onnx"]["top1_agreement"] > 0.9


@without_tensorrt
def test_build_engine_sh_runs_the_command_made_for_the_installed_tensorrt(exported, tmp_path):
    state, ctx = exported
    metrics = export_tensorrt(state, ctx, precision="fp16")
    # A stand-in for trtexec (absent here) that prints TensorRT's version banner and its arguments.
    trtexec = tmp_path / "trtexec"
    trtexec.write_text('#!/bin/sh\necho "&&&& RUNNING TensorRT.trtexec [TensorRT v$BANNER] # trtexec $*"\n')
    trtexec.chmod(0o755)

    def build(banner: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "TRTEXEC": str(trtexec), "BANNER": banner}
        return subprocess.run(["bash", str(ctx.run_dir / "build_engine.sh")], env=env, capture_output=True, text=True)

    on_10 = build("100300")
    assert on_10.returncode == 0 and "--onnx=model.onnx" in on_10.stdout and "--fp16" in on_10.stdout
    on_11 = build("110000")
    assert on_11.returncode == 0 and "--onnx=model.fp16.onnx" in on_11.stdout and "--fp16" not in on_11.stdout
    on_8 = build("8601")
    assert on_8.returncode == 1 and "needs TensorRT 10.x or 11.x" in on_8.stderr and not on_8.stdout


@without_tensorrt
def test_required_fails_and_int8_is_skipped_without_tensorrt(exported):
    state, ctx = exported
    with pytest.raises(CompressorError, match="required: true, but no TensorRT here"):
        export_tensorrt(state, ctx, required=True)
    metrics = export_tensorrt(state, ctx, precision="int8")
    assert metrics["skipped"].startswith("no TensorRT here; int8 calibrates with TensorRT 10")
    assert not (ctx.run_dir / "build_engine.sh").exists()  # trtexec --int8 without calibration would be wrong


def test_export_tensorrt_checks_its_inputs(exported):
    state, ctx = exported
    with pytest.raises(CompressorError, match="min_batch <= opt_batch <= max_batch"):
        parse_recipe({"name": "x", "model": TINY, "passes": [{"type": "export_tensorrt", "opt_batch": 64}]})
    state.artifacts.clear()
    with pytest.raises(CompressorError, match="put export_onnx before it"):
        export_tensorrt(state, ctx)


def test_sparse_weights_turn_on_when_the_onnx_has_two_four_layers(exported):
    state, ctx = exported
    metrics = export_tensorrt(state, ctx, precision="fp32")
    assert metrics["sparse_weights"] is False and metrics["two_four_layers"].startswith("0/")
    weight = state.model.fc.weight
    with torch.no_grad():  # two zeros in every four consecutive inputs of the classifier
        weight.mul_(torch.tensor([0.0, 0.0, 1.0, 1.0]).repeat(weight.shape[0], weight.shape[1] // 4))
    ox.export(state.model, state.input_shape, ctx.run_dir / state.artifacts["onnx"], dynamo=False)
    metrics = export_tensorrt(state, ctx, precision="fp32")
    assert metrics["sparse_weights"] is True and metrics["two_four_layers"].startswith("1/")
    assert "--sparsity=enable" in (ctx.run_dir / "build_engine.sh").read_text()


@with_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime_and_runs_every_batch_of_its_profile(exported, precision):
    state, ctx = exported
    metrics = export_tensorrt(state, ctx, precision=precision)
    assert metrics["tensorrt"] == rt.installed_version() and metrics["top1_agreement"] > 0.95
    engine = rt.Engine(ctx.run_dir / state.artifacts["engine"])
    for batch in (1, 32):
        assert engine(torch.randn(batch, 1, 16, 16))["logits"].shape == (batch, 10)


@with_tensorrt
def test_an_engine_that_fails_its_check_replaces_nothing(exported):
    state, ctx = exported
    export_tensorrt(state, ctx, precision="fp16")
    files = lambda: {p.name: p.read_bytes() for p in ctx.run_dir.iterdir() if p.is_file()}  # noqa: E731
    before = files()
    assert {"model.engine", "model.fp16.onnx", "build_engine.sh"} <= set(before)
    assert state.artifacts["engine"] == "model.engine"
    with pytest.raises(CompressorError, match=r"^TensorRT engine output 'logits' differs from onnxruntime .*"
                                              r"model.engine left as they were\)$"):
        export_tensorrt(state, ctx, precision="fp16", atol=0, rtol=0)  # fp16 cannot match fp32 exactly
    assert files() == before  # the old engine, fp16 ONNX and script, and no temporary file


@with_tensorrt
def test_tensorrt_backend_times_engines_it_builds(exported, tmp_path):
    state, _ = exported
    candidates = [Candidate("a", state.model, onnx=tmp_path / state.artifacts["onnx"])]
    rows, skipped = measure(candidates, ["tensorrt"], [1, 8], Settings(1, torch.device("cuda"), tmp_path),
                            state.input_shape, warmup=3, iters=20, duration_s=None)
    assert not skipped and [r["batch_size"] for r in rows] == [1, 8]
