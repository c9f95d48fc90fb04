"""INT8: the quantize pass makes a Q/DQ ONNX of the trained Fashion-MNIST model that passes
onnx.checker and runs in onnxruntime within a bound of the float ONNX; QAT fake-quantises the
layers the ONNX makes INT8, with its arithmetic, and 2:4 masks reach it as exact zeros; bad input
is one line, exit 2."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from compressor.cli import app
from compressor.data import load_data
from compressor.errors import CompressorError
from compressor.passes.quantize import TARGET_KEY
from compressor.pipeline import Pipeline
from compressor.quantization.calibration import calibration_batches
from compressor.quantization.onnx_int8 import int8_weights
from compressor.quantization.scheme import SCHEMES, fake_quant_weight
from compressor.recipe import DataSpec, parse_recipe
from compressor.runtime import onnx as ox
from compressor.sparsity.nm import onnx_nm_report
from tests.conftest import TEACHER, needs_fmnist, needs_teacher, write_recipe

QUICKSTART_MODEL = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 16},
                    "checkpoint": str(TEACHER)}
FMNIST = {"dataset": "fashion-mnist", "train_samples": 1024, "eval_samples": 500}


@needs_fmnist
@needs_teacher
def test_ptq_runs_in_onnxruntime_near_its_float_self(tmp_path):
    passes = [{"type": "quantize", "calibration_batches": 4, "keep_float": ["conv1"], "batch_sizes": [1]}]
    recipe = parse_recipe({"name": "int8", "model": QUICKSTART_MODEL, "data": FMNIST, "passes": passes})
    state = Pipeline(recipe, tmp_path / "run").run()
    metrics = state.records[-1]["metrics"]
    path = tmp_path / "run" / state.artifacts["onnx_int8"]

    onnx.checker.check_model(str(path), full_check=True)
    assert metrics["QuantizeLinear"] > 20 and metrics["DequantizeLinear"] > 20
    assert metrics["float_layers"] == ["conv1"] and metrics["int8_layers"] == 21
    assert "conv1" not in int8_weights(path) and "fc" in int8_weights(path)
    assert all(r["error"] > 0 for r in metrics["layers"])  # every layer measured, none exact
    # Both files run by onnxruntime on 500 evaluation images.
    assert metrics["fp32_onnx"]["top1"] > 90 and abs(metrics["drop"]) < 1.0
    assert metrics["size_mb"] < 0.5 * metrics["fp32_size_mb"]
    assert [r["batch_size"] for r in metrics["onnx_latency"]] == [1] and metrics["onnx_latency"][0]["speedup"] > 0
    out = ox.run_onnx(path, torch.randn(3, *state.input_shape))
    assert next(iter(out.values())).shape == (3, 10)


def test_fake_quant_weight_is_the_onnx_grid():
    """Per output channel, ±127 steps of max|w|/127: the weight onnxruntime stores, dequantised."""
    w = torch.randn(8, 4, 3, 3)
    q = fake_quant_weight(w)
    steps = q.flatten(1) / (w.abs().flatten(1).amax(1, keepdim=True) / 127)
    assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 127.001
    assert torch.equal(fake_quant_weight(torch.zeros(2, 3)), torch.zeros(2, 3))  # a pruned channel stays zero


def test_activation_grid_matches_onnxruntime():
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    for target, qrange in (("onnxruntime", (0, 255)), ("tensorrt", (-127, 127))):
        scheme = SCHEMES[target]
        scale, zero = scheme.activation_qparams(torch.tensor(-0.7), torch.tensor(3.1))
        want_zero, want_scale = compute_scale_zp(np.float32(-0.7), np.float32(3.1), np.int32(qrange[0]),
                                                 np.int32(qrange[1]), symmetric=scheme.symmetric)
        assert scale.item() == pytest.approx(float(want_scale)) and zero.item() == int(want_zero)


@needs_fmnist
def test_calibration_data_of_the_wrong_shape_is_named():
    loader = load_data(DataSpec(dataset="fashion-mnist", train_samples=256), 0).train
    with pytest.raises(CompressorError, match=r"calibration images have shape \(1, 28, 28\) and the model takes "
                                              r"\(3, 28, 28\)"):
        calibration_batches(loader, 1, (3, 28, 28))


def tiny(passes: list[dict], model: dict | None = None) -> dict:
    return {"name": "tiny", "seed": 0,
            "model": model or {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}},
            "data": {"dataset": "synthetic", "channels": 1, "image_size": 16, "train_samples": 256,
                     "eval_samples": 64, "batch_size": 32},
            "passes": passes}


def test_qat_keeps_2to4_masks_into_the_int8_onnx(tmp_path):
    recipe = parse_recipe(tiny([{"type": "semi_structured", "pattern": "2:4"}, {"type": "qat", "epochs": 1},
                                {"type": "quantize", "keep_float": ["fc"], "calibration_batches": 2,
                                 "batch_sizes": [], "evaluate": False}]))
    state = Pipeline(recipe, tmp_path / "run").run()
    qat, quant = (r["metrics"] for r in state.records[2:])
    assert "fc" not in qat["fake_quant_layers"] and "layer1.0.conv1" in qat["fake_quant_layers"]
    assert qat["steps"] == 8 and qat["train_kd"] >= 0 and quant["float_layers"] == ["fc"]
    assert not any("forward" in vars(m) for m in state.model.modules())  # the fake quant is gone
    # The 2:4 zeros are exact int8 zeros in the Q/DQ ONNX (weights' zero points are 0).
    key = next(iter(state.masks))
    mask = state.masks[key].numpy()
    path = tmp_path / "run" / state.artifacts["onnx_int8"]
    weight = int8_weights(path)[key.removesuffix(".weight")]
    assert quant["masks_kept"] and (mask == 0).mean() == 0.5 and not weight[mask == 0].any() and weight.any()
    # export_tensorrt finds them through each int8 weight's DequantizeLinear (--sparsity=enable), and the file
    # says which runtime its activations are for.
    two_four = {r["name"].removesuffix("_quantized") for r in onnx_nm_report(path) if r["sparse_2_4"]}
    assert set(state.masks) <= two_four
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}[TARGET_KEY] == "onnxruntime"


def no_weight_layers() -> nn.Module:
    """Parameters, but no Conv2d or Linear: nothing for INT8 to quantise."""
    return nn.Sequential(nn.BatchNorm2d(1), nn.AdaptiveAvgPool2d(2), nn.Flatten())


BAD = {
    "no quantisable layers": (tiny([{"type": "quantize"}], {"source": "python:tests.test_quantize:no_weight_layers"}),
                              "the model has no layer INT8 quantises"),
    "too few calibration batches": (tiny([{"type": "quantize", "calibration_batches": 9}]),
                                    "calibration_batches is 9, and the training split has only 8 batches"),
    "a layer INT8 does not cover": (tiny([{"type": "quantize", "keep_float": ["layer1.0.bn1"]}]),
                                    "keep_float 'layer1.0.bn1' matches only layer1.0.bn1 (BatchNorm2d), which INT8 "
                                    "leaves float anyway"),
    "qat without quantize": (tiny([{"type": "qat"}]), "no quantize pass follows it"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    doc, message = BAD[case]
    result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", doc)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output, result.output
