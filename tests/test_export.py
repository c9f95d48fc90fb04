"""ONNX export: parity that catches broken weights, dynamic batch on pruned CNNs and a ViT,
masks baked in, metadata, the TorchScript fallback, and `compress export`."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from compressor.cli import app
from compressor.data import load_data
from compressor.errors import CompressorError
from compressor.models import build_model
from compressor.passes.export_onnx import first_inputs
from compressor.pipeline import Pipeline, RunContext
from compressor.recipe import DataSpec, parse_recipe
from compressor.runtime import onnx as ox
from compressor.runtime import tensorrt as rt
from compressor.state import State, save_checkpoint
from tests.conftest import needs_fmnist, write_recipe

TINY = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}}
SYNTHETIC = {"dataset": "synthetic", "channels": 1, "image_size": 16, "train_samples": 32, "eval_samples": 32,
             "batch_size": 16}


@needs_fmnist
def test_parity_catches_weights_broken_after_export(tmp_path):
    model = build_model("zoo:resnet20", TINY["kwargs"] | {"num_classes": 10}).eval()
    inputs = first_inputs(load_data(DataSpec(dataset="fashion-mnist", eval_samples=64), 0).eval, 64)
    path = tmp_path / "model.onnx"
    ox.export(model, (1, 28, 28), path)
    assert ox.parity(model, path, inputs, atol=1e-4, rtol=1e-3)["top1_agreement"] == 1.0

    # Flip the sign of one convolution in the exported file, as a bad export or a corrupt copy would.
    proto = onnx.load(str(path))
    weight = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).ndim == 4)
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(proto, str(path))
    with pytest.raises(CompressorError, match=r"ONNX output 'logits' differs from torch by up to \d"):
        ox.parity(model, path, inputs, atol=1e-4, rtol=1e-3)


def run_pipeline(tmp_path: Path, model: dict, image_size: int, passes: list[dict]):
    data = {"dataset": "synthetic", "channels": 3, "image_size": image_size, "train_samples": 16, "eval_samples": 16,
            "batch_size": 16}
    recipe = parse_recipe({"name": "t", "model": model, "data": data, "passes": passes})
    return Pipeline(recipe, tmp_path / "run").run()


@pytest.mark.slow  # two torchvision models through the pipeline: ~10 s of CPU
@pytest.mark.parametrize("kind", ["pruned-resnet18", "vit"])
def test_dynamic_batch_runs_batch_1_and_8_in_onnxruntime(tmp_path, kind):
    if kind == "pruned-resnet18":
        state = run_pipeline(tmp_path, {"source": "torchvision:resnet18", "num_classes": 10}, 64,
                             [{"type": "prune", "ratio": 0.3, "round_to": 8}, {"type": "export_onnx"}])
        assert state.records[-1]["params"] < 0.7 * state.records[0]["params"]
    else:
        vit = {"source": "python:torchvision.models.vision_transformer:VisionTransformer", "num_classes": 10,
               "kwargs": {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 64,
                          "mlp_dim": 128}}
        state = run_pipeline(tmp_path, vit, 32, [{"type": "export_onnx"}])
    path = tmp_path / "run" / state.artifacts["onnx"]  # a file name in the run folder
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta["input_shape"]) == ["batch", *state.input_shape]
    assert meta["recipe"] == "t" and json.loads(meta["num_classes"]) == 10 and "mean" in json.loads(meta["preprocessing"])
    sess = ox.session(path)
    for batch in (1, 8):
        x = torch.randn(batch, *state.input_shape)
        got = sess.run(None, {ox.INPUT_NAME: x.numpy()})[0]
        with torch.no_grad():
            want = state.model.eval()(x).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def tiny_context(tmp_path: Path, passes: list[dict]) -> RunContext:
    recipe = parse_recipe({"name": "tiny", "model": TINY, "data": SYNTHETIC, "passes": passes})
    return RunContext(recipe, tmp_path, torch.device("cpu"))


def test_masks_are_baked_into_the_export(tmp_path):
    from compressor.passes.export_onnx import ExportOnnx

    ctx = tiny_context(tmp_path, [{"type": "export_onnx"}])
    model = ctx.baseline()
    mask = (torch.rand_like(model.fc.weight) > 0.5).float()
    state = State(model, {"source": TINY["source"], "kwargs": TINY["kwargs"] | {"num_classes": 10}}, (1, 16, 16),
                  masks={"fc.weight": mask})
    # The masked weights are not zero here, as if an optimiser step had escaped the mask keeper.
    baked = (model.fc.weight.detach() * mask).numpy()
    ExportOnnx(ctx.recipe.passes[0]).run(state, ctx)
    exported = [numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "model.onnx")).graph.initializer]
    assert any(np.array_equal(w, baked) or np.array_equal(w, baked.T) for w in exported)


def test_fixed_batch_and_exporter_fallback_are_reported(tmp_path):
    from compressor.passes.export_onnx import ExportOnnx

    # The dynamo exporter cannot write opset 17: the export falls back to TorchScript and says so.
    ctx = tiny_context(tmp_path, [{"type": "export_onnx", "dynamic_batch": False, "batch_size": 4, "opset": 17}])
    state = State(ctx.baseline(), {"source": TINY["source"], "kwargs": {}}, (1, 16, 16))
    metrics = ExportOnnx(ctx.recipe.passes[0]).run(state, ctx)
    path = tmp_path / "model.onnx"
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 1, 16, 16] and ox.opset_of(path) == 17
    assert metrics["exporter"] == "torchscript" and metrics["samples"] == 32  # 8 whole batches of 4


def make_run(tmp_path: Path, onnx: bool = False) -> Path:
    """A run folder as `compress run` leaves it: recipe.yaml and one checkpoint (and its model.onnx)."""
    run = tmp_path / "run"
    run.mkdir()
    write_recipe(run / "recipe.yaml", {"name": "tiny", "model": TINY, "data": SYNTHETIC, "passes": [{"type": "evaluate"}]})
    model = build_model(TINY["source"], TINY["kwargs"] | {"num_classes": 10})
    state = State(model, {"source": TINY["source"], "kwargs": TINY["kwargs"] | {"num_classes": 10}}, (1, 16, 16))
    state.records.append({"index": 0, "type": "evaluate", "dir": "00-evaluate", "params": 1, "macs": 1, "seconds": 0,
                          "metrics": {}})
    if onnx:
        ox.export(model, state.input_shape, run / "model.onnx", dynamo=False)
        state.artifacts["onnx"] = "model.onnx"
    save_checkpoint(state, run / "00-evaluate", {"index": 0, "type": "evaluate"})
    return run


def test_export_command(tmp_path):
    run = make_run(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(run), "--format", "onnx", "--out", str(tmp_path / "out"),
                                 "--set", "simplify=false"])
    assert result.exit_code == 0, result.output
    assert ox.opset_of(tmp_path / "out" / "model.onnx") == 18

    typo = runner.invoke(app, ["export", str(run), "--set", "opsett=17"])
    assert typo.exit_code == 2 and "did you mean 'opset'" in typo.output
    onnx_file = runner.invoke(app, ["export", str(tmp_path / "out" / "model.onnx")])
    assert onnx_file.exit_code == 2 and "run folder or a checkpoint folder" in onnx_file.output


without_engines = pytest.mark.skipif(rt.unavailable_reason() is None, reason="TensorRT and a GPU are here: the "
                                                                               "engine is built")


@without_engines
def test_export_engine_writes_the_bundle_and_exits_3_when_no_engine_is_built(tmp_path):
    run, out = make_run(tmp_path, onnx=True), tmp_path / "jetson"
    runner = CliRunner()
    options = ["--dynamic", "2:4:16", "--workspace", "512", "--set", "precision=fp32", "--set", "rtol=0.1"]
    result = runner.invoke(app, ["export", str(run), "--format", "engine", "--out", str(out), *options])
    assert result.exit_code == 3, result.output  # a skip is not a success
    assert (out / "model.onnx").read_bytes() == (run / "model.onnx").read_bytes()  # the run's own, copied
    assert {p.name for p in out.iterdir()} == {"model.onnx", "build_engine.sh", "check_engine.sh", "README.md"}
    script = (out / "build_engine.sh").read_text()
    assert "engine --memPoolSize=workspace:512M --minShapes=input:2x1x16x16 --optShapes=input:4x1x16x16" in script
    assert "rtol 0.1" in (out / "check_engine.sh").read_text()
    line = result.output.splitlines()[-1]
    assert line.startswith("no engine built here (no TensorRT here); the bundle for the target is in " + str(out))
    assert f"`compress export {run} --format engine {' '.join(options)}`" in line

    # Only the bundle, asked for: exit 0, into the run folder itself.
    only = runner.invoke(app, ["export", str(run), "--format", "engine", "--bundle-only", "--batch", "8",
                               "--imgsz", "16", "--set", "precision=fp32"])
    assert only.exit_code == 0, only.output
    assert "--minShapes=input:8x1x16x16 --optShapes=input:8x1x16x16" in (run / "build_engine.sh").read_text()
    assert {"check_engine.sh", "README.md"} <= {p.name for p in run.iterdir()}

    # int8 without a Q/DQ ONNX calibrates where TensorRT is: the hint repeats it, as an option or as --set.
    for options in (["--int8", "--batch", "4"], ["--set", "precision=int8"]):
        int8 = runner.invoke(app, ["export", str(run), "--format", "engine", *options])
        assert int8.exit_code == 3
        assert f"on the target, run `compress export {run} --format engine {' '.join(options)}`" in int8.output


def test_export_engine_options_are_checked(tmp_path):
    from compressor.commands.export import engine_options

    params, typed = engine_options(half=True, int8=False, batch=None, dynamic="1:8:32", workspace=2048, dla=1)
    assert params == {"precision": "fp16", "min_batch": 1, "opt_batch": 8, "max_batch": 32, "workspace_mb": 2048,
                      "dla_core": 1}
    assert typed == ["--half", "--dynamic", "1:8:32", "--workspace", "2048", "--dla", "1"]
    run = make_run(tmp_path)
    runner = CliRunner()
    for options, message in ((["--half", "--int8"], "--half and --int8 both given"),
                             (["--dynamic", "1:8"], "give MIN:OPT:MAX batch sizes"),
                             (["--batch", "4", "--dynamic", "1:4:8"], "choose one"),
                             (["--half", "--set", "precision=fp32"], "precision set both by an option and by --set"),
                             (["--imgsz", "32"], "input size is fixed at 16x16"),
                             (["--bundle-only", "--int8"], "int8 builds from a Q/DQ ONNX made for TensorRT"),
                             (["--format", "onnx", "--half"], "are for --format engine"),
                             (["--format", "onnx", "--int8", "--batch", "4"], "are for --format engine")):
        result = runner.invoke(app, ["export", str(run), "--format", "engine", *options])
        assert result.exit_code == 2 and message in result.output, (options, result.output)


def test_export_onnx_int8_writes_the_qdq_onnx_an_int8_engine_builds_from(tmp_path):
    run, out = make_run(tmp_path), tmp_path / "out"
    runner = CliRunner()
    quick = ["--set", "calibration_batches=2", "--set", "error_samples=0", "--set", "evaluate=false",
             "--set", "batch_sizes=[]"]
    result = runner.invoke(app, ["export", str(run), "--format", "onnx", "--int8", "--out", str(out),
                                 "--set", "target=tensorrt", *quick])
    assert result.exit_code == 0, result.output
    path = out / "model.int8.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert {p.key: p.value for p in proto.metadata_props}["int8_target"] == "tensorrt"
    zero_points = {t.name: t.data_type for t in proto.graph.initializer}
    quantize_nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize_nodes and {zero_points[n.input[2]] for n in quantize_nodes} == {onnx.TensorProto.INT8}
    assert ox.run_onnx(path, torch.randn(3, 1, 16, 16))["logits"].shape == (3, 10)

    # The engine's bundle builds from that very file: no float export, no calibration.
    bundle = runner.invoke(app, ["export", str(run), "--format", "engine", "--int8", "--bundle-only",
                                 "--out", str(out)])
    assert bundle.exit_code == 0, bundle.output
    assert "--onnx=model.int8.onnx --saveEngine=model.engine --int8 --fp16" in (out / "build_engine.sh").read_text()
    assert not (out / "model.onnx").exists()
