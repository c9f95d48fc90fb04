"""TensorRT: build plans for 8.6, 10.x and 11.x, the device bundle where TensorRT is absent
(build_engine.sh's exact trtexec flags by the target's version, check_engine.sh, README.md, all
relative to their folder; int8 from a Q/DQ ONNX made for TensorRT), and real engines where
TensorRT and a GPU are."""

import os
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
import torch

from compressor.errors import CompressorError
from compressor.passes.export_tensorrt import ExportTensorRT
from compressor.passes.quantize import INT8_ONNX, TARGET_KEY
from compressor.pipeline import RunContext
from compressor.quantization.onnx_int8 import quantize
from compressor.quantization.scheme import SCHEMES
from compressor.recipe import parse_recipe
from compressor.runtime import onnx as ox
from compressor.runtime import tensorrt as rt
from compressor.runtime import trtexec
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
    assert (ten.onnx_file, ten.builder_flags) == ("model.onnx", ("FP16",))
    assert rt.plan_build(8, "fp16", False, "model.onnx", "model.fp16.onnx") == ten  # 8.6 builds as 10.x does
    assert rt.plan_build(10, "int8", True, "m.onnx", "m16.onnx").builder_flags == ("INT8", "FP16", "SPARSE_WEIGHTS")
    eleven = rt.plan_build(11, "fp16", True, "model.onnx", "model.fp16.onnx")
    assert (eleven.onnx_file, eleven.builder_flags) == ("model.fp16.onnx", ("SPARSE_WEIGHTS",))
    assert rt.plan_build(11, "fp32", False, "model.onnx", "model.fp16.onnx").onnx_file == "model.onnx"
    with pytest.raises(CompressorError, match="int8 on TensorRT 11 builds from a Q/DQ ONNX made for TensorRT"):
        rt.plan_build(11, "int8", False, "model.onnx", "model.fp16.onnx")
    explicit = rt.plan_build(11, "int8", False, "model.int8.onnx", "model.fp16.onnx", qdq=True)
    assert (explicit.onnx_file, explicit.builder_flags) == ("model.int8.onnx", ())  # the Q/DQ nodes say where
    with pytest.raises(CompressorError, match="TensorRT 11.x builds no DLA engines"):
        rt.plan_build(11, "fp16", False, "model.onnx", "model.fp16.onnx", dla_core=0)
    with pytest.raises(CompressorError, match=r"TensorRT 9.x is not supported; install TensorRT 8.6, 10.x or 11.x"):
        rt.plan_build(9, "fp16", False, "model.onnx", "model.fp16.onnx")
    # On a Jetson's DLA core (a fixed-batch ONNX here: no shapes), and timed on the core it was built for.
    bundle = trtexec.Bundle("model.engine", "model.onnx", {}, (1, 16, 16), None, 4, 512, 1, 0.05, 0.05, {})
    on_dla = rt.plan_build(8, "fp16", False, "model.onnx", "model.fp16.onnx", dla_core=1)
    assert trtexec.build_arguments(8, on_dla, bundle) == [
        "--onnx=model.onnx", "--saveEngine=model.engine", "--fp16", "--memPoolSize=workspace:512", "--useDLACore=1",
        "--allowGPUFallback"]
    assert trtexec.timing_arguments(bundle) == ["--loadEngine=model.engine", "--useDLACore=1"]
    assert [rt.is_supported(v) for v in ("8.5.2", "8.6.2", "10.3.0", "11.0", "7.1")] == [False, True, True, True, False]


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


# A stand-in for trtexec (absent here): it prints TensorRT's version banner for --help ($BANNER), records
# each other call's folder and arguments in $CALLS, checks the ONNX it is given is there, "saves" the
# engine, and prints timing lines as trtexec does.
FAKE_TRTEXEC = """#!/bin/sh
if [ "$1" = "--help" ]; then echo "&&&& RUNNING TensorRT.trtexec [TensorRT v$BANNER] # trtexec --help"; exit 0; fi
echo "$PWD $*" >> "$CALLS"
for a in "$@"; do
  case "$a" in --onnx=*) [ -f "${a#--onnx=}" ] || exit 9 ;; --saveEngine=*) : > "${a#--saveEngine=}" ;; esac
done
echo "[I] Throughput: 1234.5 qps"
echo "[I] Latency: min = 0.5 ms, max = 0.9 ms, mean = 0.6 ms, median = 0.6 ms"
"""
WORKSPACE = {8: "--memPoolSize=workspace:1024", 10: "--memPoolSize=workspace:1024M",
             11: "--memPoolSize=workspace:1024M"}


def fake_tool(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    (folder / name).chmod(0o755)
    return folder


def run_script(script: Path, bin_dir: Path, calls: Path, banner: str = "", **env) -> subprocess.CompletedProcess:
    """The script from another folder, with only the fakes and the system's tools on PATH."""
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "BANNER": banner, **env}
    return subprocess.run(["bash", str(script)], env=env, cwd="/", capture_output=True, text=True)


@without_tensorrt
def test_without_tensorrt_the_pass_writes_a_self_contained_bundle(exported, tmp_path_factory):
    state, ctx = exported
    metrics = export_tensorrt(state, ctx, precision="fp16", sparse_weights=True)
    assert metrics["skipped"] == "no TensorRT here" and metrics["bundle"] == str(ctx.run_dir)
    # The folder copied elsewhere is all a device needs: its scripts name no path outside it.
    tmp_path = tmp_path_factory.mktemp("elsewhere")
    bundle = shutil.copytree(ctx.run_dir, tmp_path / "bundle")
    for onnx_file in ctx.run_dir.glob("*.onnx"):
        onnx_file.unlink()
    assert {"model.onnx", "model.fp16.onnx", "build_engine.sh", "check_engine.sh", "README.md"} <= {
        p.name for p in bundle.iterdir()}
    for name in ("build_engine.sh", "check_engine.sh"):
        script = bundle / name
        assert os.access(script, os.X_OK) and subprocess.run(["bash", "-n", str(script)]).returncode == 0
        text = script.read_text()
        assert str(ctx.run_dir) not in text and "../" not in text and 'cd "$(dirname "$0")"' in text
    readme = (bundle / "README.md").read_text()
    for fact in ("zoo:resnet20", "1 x 16 x 16", "| precision | fp16 |", "1..32, tuned for 8", "sparse kernels on",
                 "atol 0.05, rtol 0.05", "8.6, 10.x or 11.x", "bash build_engine.sh", "bash check_engine.sh"):
        assert fact in readme, fact
    # The ONNX the 11.x branch reads: fp16 weights inside, float32 input and output as before.
    fp16 = onnx.load(str(bundle / "model.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert metrics["fp16_onnx"]["top1_agreement"] > 0.9

    # build_engine.sh runs the exact command made for the target's TensorRT, from the bundle's folder.
    bin_dir = fake_tool(tmp_path / "bin", "trtexec", FAKE_TRTEXEC)
    for major, banner in ((8, "8602"), (10, "100300"), (11, "110000")):
        calls = tmp_path / f"calls-{major}"
        built = run_script(bundle / "build_engine.sh", bin_dir, calls, banner)
        assert built.returncode == 0, built.stderr
        onnx_file = "model.fp16.onnx" if major == 11 else "model.onnx"
        precision = [] if major == 11 else ["--fp16"]  # 11.x takes fp16 from the ONNX
        assert calls.read_text().split() == [str(bundle), f"--onnx={onnx_file}", "--saveEngine=model.engine",
                                             *precision, "--sparsity=enable", WORKSPACE[major], *SHAPES.split()]
    too_old = run_script(bundle / "build_engine.sh", bin_dir, tmp_path / "calls-8.5", "8502")
    assert too_old.returncode == 1 and "needs TensorRT 8.6, 10.x or 11.x" in too_old.stderr
    assert "version 8.5" in too_old.stderr and not (tmp_path / "calls-8.5").exists()

    # check_engine.sh times the engine it finds beside it, and says when polygraphy cannot check it.
    checked = run_script(bundle / "check_engine.sh", bin_dir, tmp_path / "check", "100300")
    assert checked.returncode == 0, checked.stderr
    assert (tmp_path / "check").read_text().split() == [str(bundle), "--loadEngine=model.engine",
                                                        "--shapes=input:8x1x16x16"]
    assert "Throughput: 1234.5 qps" in checked.stdout and "Latency: min = 0.5 ms" in checked.stdout
    assert "polygraphy is not installed" in checked.stdout
    fake_tool(bin_dir, "polygraphy", '#!/bin/sh\necho "polygraphy $*" >> "$CALLS"\n')
    checked = run_script(bundle / "check_engine.sh", bin_dir, tmp_path / "parity", "100300")
    onnxrt, engine = (tmp_path / "parity").read_text().splitlines()[1:]
    assert onnxrt.startswith("polygraphy run model.onnx --onnxrt --input-shapes input:[8,1,16,16]")
    assert engine.startswith("polygraphy run model.engine --model-type engine --trt --load-inputs")
    assert engine.endswith("--atol 0.05 --rtol 0.05") and checked.returncode == 0


@without_tensorrt
def test_the_scripts_find_trtexec_where_jetpack_and_tensorrt_home_put_it(exported, tmp_path):
    state, ctx = exported
    export_tensorrt(state, ctx, precision="fp32", workspace_mb=256, min_batch=4, opt_batch=4, max_batch=4)
    home = tmp_path / "TensorRT-8.6"
    fake_tool(home / "bin", "trtexec", FAKE_TRTEXEC.replace("TensorRT v$BANNER", "no banner"))
    # No banner: the version comes from the Debian package, as on JetPack.
    dpkg = fake_tool(tmp_path / "bin", "dpkg-query", "#!/bin/sh\necho 8.6.2.3-1+cuda12.2\n")
    calls = tmp_path / "calls"
    built = run_script(ctx.run_dir / "build_engine.sh", dpkg, calls, TENSORRT_HOME=str(home))
    assert built.returncode == 0 and f"building with {home}/bin/trtexec (TensorRT 8.6)" in built.stdout
    assert calls.read_text().split()[1:] == [
        "--onnx=model.onnx", "--saveEngine=model.engine", "--memPoolSize=workspace:256",
        "--minShapes=input:4x1x16x16", "--optShapes=input:4x1x16x16", "--maxShapes=input:4x1x16x16"]
    missing = run_script(ctx.run_dir / "check_engine.sh", tmp_path / "nothing", calls)
    assert missing.returncode == 1 and "no trtexec on PATH, in /usr/src/tensorrt/bin (JetPack)" in missing.stderr


@without_tensorrt
def test_required_fails_and_int8_is_skipped_without_tensorrt(exported):
    state, ctx = exported
    with pytest.raises(CompressorError, match="required: true, but no TensorRT here"):
        export_tensorrt(state, ctx, required=True)
    # No Q/DQ ONNX: only TensorRT here could calibrate, so nothing is written, and the line says what to run.
    metrics = export_tensorrt(state, ctx, precision="int8")
    assert metrics["skipped"].startswith("no TensorRT here; int8 builds from a Q/DQ ONNX made for TensorRT, and "
                                         f"there is no {ctx.run_dir / 'model.int8.onnx'}: `compress export RUN "
                                         "--format onnx --int8 --set target=tensorrt` writes it")
    assert "`compress export RUN --format engine --set precision=int8` where TensorRT" in metrics["skipped"]
    assert not (ctx.run_dir / "build_engine.sh").exists()  # trtexec --int8 without calibration would be wrong
    with pytest.raises(CompressorError, match=r"^int8 builds from a Q/DQ ONNX made for TensorRT, and there is no"):
        export_tensorrt(state, ctx, precision="int8", build=False)


def test_export_tensorrt_checks_its_inputs(exported):
    state, ctx = exported
    with pytest.raises(CompressorError, match="min_batch <= opt_batch <= max_batch"):
        parse_recipe({"name": "x", "model": TINY, "passes": [{"type": "export_tensorrt", "opt_batch": 64}]})
    for params, message in (({"dla_core": 0, "precision": "fp32"}, "dla_core needs precision fp16 or int8"),
                            ({"build": False, "required": True}, "build: false asks for the bundle only")):
        with pytest.raises(CompressorError, match=message):
            parse_recipe({"name": "x", "model": TINY, "passes": [{"type": "export_onnx"},
                                                                 {"type": "export_tensorrt", **params}]})
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


def qdq_onnx_for(ctx, target: str) -> Path:
    """The Q/DQ ONNX the quantize pass writes for `target`, made from the run's ONNX by the same quantiser
    (calibrated on random batches here: its scales do not matter to the bundle) and marked as the pass marks it."""
    path = ctx.run_dir / INT8_ONNX
    quantize(ctx.run_dir / "model.onnx", path, list(torch.randn(2, 16, 1, 16, 16)), "minmax", SCHEMES[target], [])
    ox.add_metadata(path, {TARGET_KEY: target})
    return path


def test_an_int8_bundle_builds_from_the_qdq_onnx_made_for_tensorrt(exported, tmp_path):
    state, ctx = exported
    weight = state.model.fc.weight
    with torch.no_grad():  # a 2:4 classifier, as a semi_structured pass leaves it
        weight.mul_(torch.tensor([0.0, 0.0, 1.0, 1.0]).repeat(weight.shape[0], weight.shape[1] // 4))
    ox.export(state.model, state.input_shape, ctx.run_dir / "model.onnx", dynamo=False)
    qdq = qdq_onnx_for(ctx, "tensorrt")
    metrics = export_tensorrt(state, ctx, precision="int8", build=False)
    # Its int8 weights are seen through their DequantizeLinear: the 2:4 classifier turns sparse kernels on.
    assert metrics["qdq_onnx"] == str(qdq) and metrics["two_four_layers"].startswith("1/") and metrics["sparse_weights"]

    # build_engine.sh: explicit quantisation, no calibration, for every version the target may have.
    bin_dir = fake_tool(tmp_path / "bin", "trtexec", FAKE_TRTEXEC)
    for major, banner in ((8, "8602"), (10, "100300"), (11, "110000")):
        calls = tmp_path / f"calls-{major}"
        built = run_script(ctx.run_dir / "build_engine.sh", bin_dir, calls, banner)
        assert built.returncode == 0, built.stderr
        precision = [] if major == 11 else ["--int8", "--fp16"]  # 11.x is strongly typed: the Q/DQ nodes say it
        assert calls.read_text().split() == [str(ctx.run_dir), "--onnx=model.int8.onnx", "--saveEngine=model.engine",
                                             *precision, "--sparsity=enable", WORKSPACE[major], *SHAPES.split()]
    readme = (ctx.run_dir / "README.md").read_text()
    assert "| precision | int8, explicit: the Q/DQ ONNX model.int8.onnx made for TensorRT |" in readme
    assert "against onnxruntime on model.int8.onnx" in readme
    assert "polygraphy run model.int8.onnx --onnxrt" in (ctx.run_dir / "check_engine.sh").read_text()

    # One made for onnxruntime (uint8 activations with a zero point) never reaches TensorRT, here or in a script.
    qdq_onnx_for(ctx, "onnxruntime")
    made_for = (r"model.int8.onnx is a Q/DQ ONNX made for onnxruntime \(uint8 activations with a zero point\), and "
                r"TensorRT takes symmetric int8 only: `compress export RUN --format onnx --int8 --set target=tensorrt` "
                "writes one")
    with pytest.raises(CompressorError, match=made_for):
        export_tensorrt(state, ctx, precision="int8", build=False)


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
