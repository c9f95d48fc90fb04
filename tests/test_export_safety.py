"""Exports replace the run folder's files only once their checks pass, name their files relative to
the run folder, and check parity at the outputs' own scale (and say when it proves little)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.passes import export_tensorrt as trt_pass
from compressor.files import Staging
from compressor.passes.export_onnx import ExportOnnx
from compressor.state import artifact_path
from compressor.passes.export_tensorrt import ExportTensorRT
from compressor.pipeline import RunContext
from compressor.recipe import parse_recipe
from compressor.runtime import onnx as ox
from compressor.runtime import tensorrt as rt
from compressor.state import State

TINY = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}}
SYNTHETIC = {"dataset": "synthetic", "channels": 1, "image_size": 16, "train_samples": 32, "eval_samples": 32,
             "batch_size": 16}
without_tensorrt = pytest.mark.skipif(rt.unavailable_reason() is None, reason="TensorRT and a GPU are here")


def context(run_dir: Path) -> RunContext:
    recipe = parse_recipe({"name": "tiny", "model": TINY, "data": SYNTHETIC})
    return RunContext(recipe, run_dir, torch.device("cpu"))


def run_pass(cls, state, ctx, **params) -> dict:
    return cls(cls.Params.model_validate({"type": cls.Params.model_fields["type"].default, **params})).run(state, ctx)


def resnet_state(ctx) -> State:
    torch.manual_seed(0)
    return State(ctx.baseline(), {"source": TINY["source"], "kwargs": {}}, (1, 16, 16))


def linear_state(scale: float) -> State:
    """A linear classifier whose outputs are about `scale` in size."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    with torch.no_grad():
        model[1].weight.mul_(scale)
        model[1].bias.mul_(scale)
    return State(model.eval(), {"source": "python:toy", "kwargs": {}}, (1, 16, 16))


def listing(folder: Path) -> dict[str, bytes]:
    """Every file in the folder, hidden temporary ones included, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_failed_reexport_keeps_the_good_onnx_byte_for_byte(tmp_path):
    ctx = context(tmp_path)
    state = resnet_state(ctx)
    good = run_pass(ExportOnnx, state, ctx, simplify=False)
    assert state.artifacts["onnx"] == "model.onnx"  # a file name, relative to the run folder
    assert good["file"] == str(tmp_path / "model.onnx") and 0 < good["max_abs_diff"] < 1e-4
    before = listing(tmp_path)
    assert list(before) == ["model.onnx"]

    # torch and onnxruntime differ in the last bits (good['max_abs_diff'] > 0): no tolerance must fail.
    with torch.no_grad():
        state.model.fc.bias.add_(1.0)  # and the new export would differ from the one on disk
    with pytest.raises(CompressorError) as caught:
        run_pass(ExportOnnx, state, ctx, simplify=False, atol=0, rtol=0)
    message = str(caught.value)
    assert message.startswith("ONNX output 'logits' differs from torch by up to ")
    assert message.endswith("(model.onnx left as it was)") and ".model.onnx." not in message
    assert listing(tmp_path) == before  # same bytes, and no temporary file left behind


def test_an_error_names_the_target_not_its_temporary_stand_in(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(CompressorError, match=rf"^onnx.checker rejects {target}: .*\(model.onnx left as it was\)$"):
        target.write_bytes(b"old")
        with Staging() as staging:
            tmp = staging.file(target)
            tmp.write_bytes(b"not an onnx file")
            ox.check(tmp)
    assert listing(tmp_path) == {"model.onnx": b"old"}
    with Staging() as staging:  # and without an error, the files are replaced
        staging.file(target).write_bytes(b"new")
    assert listing(tmp_path) == {"model.onnx": b"new"}


@without_tensorrt
def test_a_failed_fp16_check_keeps_the_fp16_onnx_and_the_script(tmp_path, monkeypatch):
    ctx = context(tmp_path)
    state = resnet_state(ctx)
    run_pass(ExportOnnx, state, ctx, simplify=False)
    metrics = run_pass(ExportTensorRT, state, ctx, precision="fp16")
    assert metrics["skipped"] == "no TensorRT here"
    assert {k: state.artifacts[k] for k in ("onnx", "onnx_fp16", "build_engine.sh")} == {
        "onnx": "model.onnx", "onnx_fp16": "model.fp16.onnx", "build_engine.sh": "build_engine.sh"}
    assert metrics["fp16_onnx"]["file"] == str(tmp_path / "model.fp16.onnx")
    before = listing(tmp_path)
    assert set(before) == {"model.onnx", "model.fp16.onnx", "build_engine.sh", "check_engine.sh", "README.md"}

    monkeypatch.setitem(trt_pass.TOLERANCE, "fp16", (0.0, 0.0))  # fp16 against fp32 cannot pass this
    with pytest.raises(CompressorError, match=r"^fp16 ONNX output 'logits' differs from the fp32 ONNX .*"
                                              r"\(model.fp16.onnx left as it was\)$"):
        run_pass(ExportTensorRT, state, ctx, precision="fp16", opt_batch=4)
    assert listing(tmp_path) == before


def test_artifacts_resolve_inside_the_run_folder(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir(), elsewhere.mkdir()
    assert artifact_path({"onnx": "model.onnx"}, "onnx", run) == run / "model.onnx"
    assert artifact_path({}, "onnx", run) is None
    with pytest.raises(CompressorError, match="artifact 'onnx' is '../..', not a file name in the run folder"):
        artifact_path({"onnx": "../.."}, "onnx", run)

    # A stranger's checkpoint that points at an ONNX elsewhere: nothing is read or written there.
    ctx = context(run)
    state = resnet_state(ctx)
    ox.export(state.model, state.input_shape, elsewhere / "evil.onnx", dynamo=False)
    state.artifacts["onnx"] = str(elsewhere / "evil.onnx")
    with pytest.raises(CompressorError, match="artifact 'onnx' is .*, not a file name in the run folder"):
        run_pass(ExportTensorRT, state, ctx, precision="fp16")
    assert [p.name for p in elsewhere.iterdir()] == ["evil.onnx"] and not list(run.iterdir())


def tiny_onnx(tmp_path: Path, model: nn.Module, name: str) -> Path:
    path = tmp_path / name
    ox.export(model, (1, 16, 16), path, dynamo=False)
    return path


def test_parity_compares_tiny_outputs_at_their_own_scale(tmp_path):
    state = linear_state(1e-8)
    inputs = torch.randn(32, 1, 16, 16)
    with torch.no_grad():
        reference = state.model(inputs).numpy()
    assert 1e-9 < np.abs(reference).max() < 1e-7

    # The right export passes, and says that it proves little.
    check = ox.parity(state.model, tiny_onnx(tmp_path, state.model, "right.onnx"), inputs, atol=1e-4, rtol=1e-3)
    assert check["degenerate"] and check["output_scale"] == pytest.approx(np.abs(reference).max())
    assert "proves little" in ox.degenerate_note(check, "torch")

    # An ONNX that outputs zeros: an absolute atol of 1e-4 would accept it; the scaled one does not.
    zeros = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    nn.init.zeros_(zeros[1].weight), nn.init.zeros_(zeros[1].bias)
    path = tiny_onnx(tmp_path, zeros, "zeros.onnx")
    assert not ox.run_onnx(path, inputs)["logits"].any() and np.allclose(0, reference, atol=1e-4, rtol=1e-3)
    with pytest.raises(CompressorError, match=r"differs from torch by up to \S+ \(atol \S+, scaled to outputs up "
                                              r"to \S+e-0[89], rtol 0.001\)"):
        ox.parity(state.model, path, inputs, atol=1e-4, rtol=1e-3)


def test_ordinary_outputs_keep_the_absolute_tolerance():
    want = {"logits": np.array([[3.0, -2.0], [0.5, 1.0]], dtype=np.float32)}
    off = {"logits": want["logits"] + np.float32(5e-5)}
    check = ox.compare(want, off, 1e-4, 0.0, "ONNX", "torch", "")
    assert check["output_scale"] == 3.0 and not check["degenerate"]
    with pytest.raises(CompressorError, match=r"\(atol 0.0001, rtol 0\)"):
        ox.compare(want, {"logits": want["logits"] + np.float32(2e-4)}, 1e-4, 0.0, "ONNX", "torch", "")
    # Below 1 the tolerance shrinks with the outputs: 5e-5 is too much on outputs of at most 0.3.
    small = {"logits": want["logits"] / 10}
    with pytest.raises(CompressorError, match=r"\(atol 3e-05, scaled to outputs up to 0.3, rtol 0\)"):
        ox.compare(small, {"logits": small["logits"] + np.float32(5e-5)}, 1e-4, 0.0, "ONNX", "torch", "")


def test_a_zero_head_exports_with_a_note_and_degenerate_in_its_metrics(tmp_path):
    ctx = context(tmp_path)
    state = linear_state(0.0)  # a zero-initialised head: every output is exactly 0
    metrics = run_pass(ExportOnnx, state, ctx)
    assert metrics["degenerate"] is True and metrics["output_scale"] == 0.0 and metrics["max_abs_diff"] == 0.0
    assert metrics["note"].startswith("the parity check against torch proves little: its outputs hardly vary")
    # With nothing to scale by, only zeros match zeros.
    near_zero = {"logits": np.full((4, 10), 1e-6, dtype=np.float32)}
    with pytest.raises(CompressorError, match="differs from torch by up to 1e-06"):
        ox.compare({"logits": np.zeros((4, 10), np.float32)}, near_zero, 1e-4, 1e-3, "ONNX", "torch", "")
    # A trained-looking model is not degenerate, and carries no note.
    ordinary = run_pass(ExportOnnx, resnet_state(ctx), ctx)
    assert ordinary["degenerate"] is False and "note" not in ordinary


class FakeTensorRT:
    """Stands in for TensorRT and a GPU: 'builds' an engine that records what it was built from,
    and a parity check that fails when asked for no tolerance at all."""

    def __init__(self, monkeypatch, major: int):
        self.built_from: list[Path] = []
        monkeypatch.setattr(rt, "unavailable_reason", lambda: None)
        monkeypatch.setattr(rt, "installed_major", lambda: major)
        monkeypatch.setattr(rt, "installed_version", lambda: f"{major}.0.0")
        monkeypatch.setattr(rt, "build_engine", self.build_engine)
        monkeypatch.setattr(rt, "engine_parity", self.engine_parity)

    def build_engine(self, onnx_path, engine_path, plan, input_shape, batches, workspace_mb, calibration=None,
                     calibration_cache=None):
        assert onnx_path.is_file() and engine_path.parent == onnx_path.parent
        self.built_from.append(onnx_path)
        engine_path.write_bytes(b"engine from " + onnx_path.read_bytes()[:64])
        if calibration:
            calibration_cache.write_bytes(b"scales")

    @staticmethod
    def engine_parity(engine_path, onnx_path, inputs, max_batch, atol, rtol, dla_core=None):
        assert engine_path.read_bytes().startswith(b"engine from ")
        if atol == 0:
            raise CompressorError(f"TensorRT engine output 'logits' differs from onnxruntime by up to 0.01 "
                                  f"(atol 0, rtol 0) on {len(inputs)} evaluation inputs; {engine_path} is wrong")
        return {"max_abs_diff": 0.001, "top1_agreement": 1.0, "samples": len(inputs), "output_scale": 1.0,
                "degenerate": False}


@pytest.mark.parametrize("major,precision", [(10, "fp32"), (11, "fp16"), (10, "int8")])
def test_an_engine_replaces_the_old_one_only_after_its_check(tmp_path, monkeypatch, major, precision):
    fake = FakeTensorRT(monkeypatch, major)
    ctx = context(tmp_path)
    state = resnet_state(ctx)
    run_pass(ExportOnnx, state, ctx, simplify=False)
    metrics = run_pass(ExportTensorRT, state, ctx, precision=precision, opt_batch=4, calibration_samples=8)
    assert metrics["file"] == str(tmp_path / "model.engine") and state.artifacts["engine"] == "model.engine"
    # TensorRT 11 builds fp16 from the fp16 ONNX, read while it still waits beside its place.
    source = fake.built_from[-1]
    assert source.name.startswith(".model.fp16.onnx.") if precision == "fp16" else source == tmp_path / "model.onnx"
    written = {"model.onnx", "model.engine"} | {"fp16": {"model.fp16.onnx", "build_engine.sh"},
                                                "fp32": {"build_engine.sh"},
                                                "int8": {"model.calibration.cache"}}[precision]
    written |= {"check_engine.sh", "README.md"}  # the rest of the bundle for a device
    before = listing(tmp_path)
    assert set(before) == written

    with pytest.raises(CompressorError) as caught:
        run_pass(ExportTensorRT, state, ctx, precision=precision, opt_batch=4, calibration_samples=8, atol=0)
    message = str(caught.value)
    assert f"{tmp_path / 'model.engine'} is wrong" in message and "left as they were)" in message
    assert listing(tmp_path) == before
