"""ONNX export (dynamo first, TorchScript as a logged fallback), checks, metadata, onnxruntime
sessions, and parity against a reference on real inputs."""

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from compressor.console import console
from compressor.errors import CompressorError
from compressor.files import replacing

INPUT_NAME, OUTPUT_NAME = "input", "logits"


class HalfPrecision(nn.Module):
    """fp16 inside, fp32 at the edges: the reduced-precision ONNX a strongly typed TensorRT
    network needs, with the same float32 input and output as the plain export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x):
        return self.model(x.half()).float()


@torch.no_grad()
def bake_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Multiplies the masks into the weights, so an export is exact even if a masked weight drifted."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def export(model: nn.Module, input_shape, path: Path, opset: int = 18, dynamic_batch: bool = True,
           dynamo: bool = True, static_batch: int = 1, output_name: str = OUTPUT_NAME) -> str:
    """Writes `path` atomically and returns the exporter that succeeded."""
    model = model.eval().cpu()
    # Batch 2 when dynamic: torch.export specialises dimensions of size 1 and would freeze the batch.
    example = torch.randn(2 if dynamic_batch else static_batch, *input_shape)
    kwargs = dict(input_names=[INPUT_NAME], output_names=[output_name], opset_version=opset)
    used = "dynamo"
    with replacing(path) as tmp:
        try:
            if not dynamo:
                raise RuntimeError("dynamo exporter turned off in the recipe")
            shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
            # The dynamo exporter reports its inner workings on stdout and stderr; its result is checked instead.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), str(tmp), dynamo=True, dynamic_shapes=shapes,
                                  external_data=False, verbose=False, **kwargs)
            written = opset_of(tmp)
            if written != opset:
                raise RuntimeError(f"it wrote opset {written}, not the {opset} asked for")
        except Exception as e:
            if dynamo:
                console.print(f"  [yellow]dynamo exporter failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]}); falling back to the TorchScript exporter[/yellow]")
            used = "torchscript"
            axes = {INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), str(tmp), dynamo=False, dynamic_axes=axes, **kwargs)
    return used


def opset_of(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))


def simplify(path: Path) -> None:
    """Folds constants and fuses what onnxslim can; the graph's inputs and outputs stay as they are."""
    import onnxslim

    with replacing(path) as tmp:
        onnx.save(onnxslim.slim(str(path)), str(tmp))


def add_metadata(path: Path, meta: dict) -> None:
    model = onnx.load(str(path))
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    with replacing(path) as tmp:
        onnx.save(model, str(tmp))


def check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise CompressorError(f"onnx.checker rejects {path}: {str(e).splitlines()[0]}") from None


def session(path: Path, threads: int | None = None, providers: list[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Sessions that take turns on few cores would otherwise steal each other's time by spinning.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # a corrupt or foreign file is the user's input
        raise CompressorError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:200]}") from None


class OnnxForward:
    """An ONNX file as a forward function, torch tensors in and out (its first output), so that
    the metric of an export is measured by the same code as the model's."""

    def __init__(self, path: Path, threads: int | None = None):
        self.session = session(path, threads)
        self.batch = self.session.get_inputs()[0].shape[0]

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        chunks = inputs.split(self.batch) if isinstance(self.batch, int) else [inputs]
        outputs = [self.session.run(None, {INPUT_NAME: c.cpu().float().numpy()})[0] for c in chunks]
        return torch.from_numpy(np.concatenate(outputs)).to(inputs.device)


def run_onnx(path: Path, inputs: torch.Tensor) -> dict[str, np.ndarray]:
    """All outputs for `inputs`, fed in chunks of the model's batch when that batch is fixed."""
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    batch = sess.get_inputs()[0].shape[0]
    chunks = inputs.split(batch) if isinstance(batch, int) else [inputs]
    results = [sess.run(None, {INPUT_NAME: chunk.cpu().numpy()}) for chunk in chunks]
    return {name: np.concatenate([r[i] for r in results]) for i, name in enumerate(names)}


# Reference outputs that vary across the inputs by less than this (relative to their scale where
# it exceeds 1) hardly depend on the input: all zero, constant, or vanishingly small.
DEGENERATE_SPREAD = 1e-6


def scale_of(want: np.ndarray) -> float:
    return float(np.abs(want).max()) if want.size else 0.0


def effective_atol(atol: float, scale: float) -> float:
    """`atol` as given for outputs of magnitude 1 or more; for smaller outputs, `atol` times their
    largest magnitude: a model whose outputs are 1e-8 is compared at its own scale, where an
    absolute 1e-4 would accept anything, all zeros included."""
    return atol * min(1.0, scale)


def is_degenerate(want: np.ndarray, scale: float) -> bool:
    """Whether a reference output hardly depends on its input, so that matching it proves little."""
    spread = float(np.abs(want - want[:1]).max()) if len(want) > 1 else scale
    return spread <= DEGENERATE_SPREAD * max(1.0, scale)


def compare(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], atol: float, rtol: float,
            what: str, against: str, hint: str) -> dict:
    """Every output of `got` must match `expected` within rtol and an atol scaled to the expected
    outputs (effective_atol); the first mismatch raises, naming the output and by how much it is
    off. `degenerate` says the expected outputs hardly vary with the input (is_degenerate)."""
    worst, agreement, scale, degenerate = 0.0, None, 0.0, False
    for name, want in expected.items():
        have = got[name].astype(np.float32)
        if have.shape != want.shape:
            raise CompressorError(f"{what} output '{name}' has shape {have.shape}, {against} gives {want.shape}")
        diff = float(np.abs(have - want).max()) if want.size else 0.0
        own = scale_of(want)
        tol = effective_atol(atol, own)
        if not np.allclose(have, want, atol=tol, rtol=rtol):
            scaled = f", scaled to outputs up to {own:.3g}" if tol != atol else ""
            raise CompressorError(
                f"{what} output '{name}' differs from {against} by up to {diff:.3g} "
                f"(atol {tol:.3g}{scaled}, rtol {rtol:g}) on {len(want)} evaluation inputs; {hint}"
            )
        worst, scale = max(worst, diff), max(scale, own)
        degenerate = degenerate or is_degenerate(want, own)
        if want.ndim == 2:  # logits: the classes they pick must agree too
            agreement = min(agreement if agreement is not None else 1.0, float((have.argmax(1) == want.argmax(1)).mean()))
    return {"max_abs_diff": worst, "top1_agreement": agreement, "samples": len(next(iter(expected.values()))),
            "output_scale": scale, "degenerate": degenerate}


def agreement_text(check: dict) -> str:
    """', top-1 agreement 99.8%' where outputs are logits, else nothing."""
    return "" if check.get("top1_agreement") is None else f", top-1 agreement {check['top1_agreement']:.1%}"


def degenerate_note(check: dict, against: str) -> str | None:
    """What to tell the user where a parity check passed on outputs that hardly vary with the input."""
    if not check.get("degenerate"):
        return None
    return (f"the parity check against {against} proves little: its outputs hardly vary with the input "
            f"(largest magnitude {check['output_scale']:.3g} over {check['samples']} evaluation inputs); an untrained "
            "model or a zero-initialised head? Check the model's weights before trusting this export")


@torch.no_grad()
def parity(model: nn.Module, path: Path, inputs: torch.Tensor, atol: float, rtol: float) -> dict:
    """Runs torch and onnxruntime on the same real inputs; a mismatch raises with its size."""
    got = run_onnx(path, inputs)
    expected = {next(iter(got)): model.eval().cpu()(inputs.cpu()).float().numpy()}
    return compare(expected, got, atol, rtol, "ONNX", "torch",
                   "the export is wrong — try export_onnx with dynamo: false, or report the model")
