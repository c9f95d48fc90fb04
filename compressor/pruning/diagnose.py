"""Failures inside a model's forward or inside torch-pruning's graph analysis, turned into one
line that names the module and the operation, so the user knows what to `ignore`."""

import contextlib
import os
import traceback

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from compressor.errors import CompressorError
from compressor.pruning.leftovers import leaving_no_tensors
from compressor.pruning.tp_internals import failing_node

# Frames from these packages are machinery; the frame worth showing is the model's own code.
_CALLERS = ("/compressor/pruning/", "/torch_pruning/")
_MACHINERY = ("/torch/", *_CALLERS)


def _model_frame(frames: list[traceback.FrameSummary]) -> traceback.FrameSummary | None:
    """The innermost frame of model code called from our pruning machinery."""
    callers = [i for i, f in enumerate(frames) if any(m in f.filename for m in _CALLERS)]
    inner = frames[callers[-1] + 1:] if callers else frames
    own = [f for f in inner if not any(m in f.filename for m in _MACHINERY) and "<frozen" not in f.filename]
    return own[-1] if own else None


def _short(frame: traceback.FrameSummary | None) -> str:
    if frame is None:
        return ""
    parts = frame.filename.split(os.sep)
    where = os.sep.join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else frame.filename
    return f" at {where}:{frame.lineno} `{(frame.line or '').strip()}`"


@contextlib.contextmanager
def module_stack(model: nn.Module):
    """A list holding the names of the modules being executed, innermost last. A module that
    raises stays on it, so after a failure its last entry names the failing module."""
    stack: list[str] = []
    handles = []

    def enter(label):
        return lambda *_: stack.append(label)  # returns None: the module's input stays as it is

    def leave(*_):
        stack.pop()  # returns None: the module's output stays as it is

    for name, module in model.named_modules():
        label = f"'{name}' ({type(module).__name__})" if name else f"the model ({type(module).__name__})"
        handles.append(module.register_forward_pre_hook(enter(label)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def forward_or_explain(model: nn.Module, example: torch.Tensor, doing: str):
    """Runs the model; a failure becomes a CompressorError naming the module and source line."""
    with module_stack(model) as stack, leaving_no_tensors(model):
        try:
            with torch.no_grad():
                return model(example)
        except Exception as e:
            where = _short(_model_frame(traceback.extract_tb(e.__traceback__)))
            module = f" in module {stack[-1]}" if stack else ""
            raise CompressorError(f"{doing}: the model fails{module}{where}: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200]}") from None


def _caller_stack() -> list[traceback.FrameSummary]:
    """The stack of the operation a torch function mode is handling, without the frames of the
    modes handling it (another mode may run inside this one)."""
    frames = traceback.extract_stack()
    while frames and frames[-1].name in ("__torch_function__", "_caller_stack"):
        frames.pop()
    return frames


class _Origins(TorchFunctionMode):
    """Remembers, for every autograd node a forward creates, the module and source line that made it."""

    def __init__(self, stack: list[str]):
        super().__init__()
        self.stack, self.origin = stack, {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.grad_fn is not None and t.grad_fn not in self.origin:
                name = getattr(func, "__name__", str(func))
                self.origin[t.grad_fn] = (f"{name}{_short(_model_frame(_caller_stack()))}",
                                          self.stack[-1] if self.stack else "the model")
        return out


def headline(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no message'}"


@contextlib.contextmanager
def recording_origins(model: nn.Module):
    """A dict filled, while the block runs the model, with autograd node -> (operation, module)."""
    with module_stack(model) as stack, _Origins(stack) as origins:
        yield origins.origin


def explain_graph_failure(model: nn.Module, example: torch.Tensor, exc: BaseException, analyse) -> str:
    """Why torch-pruning failed: reruns `analyse()` (which raised `exc`) while recording where
    every operation came from, then names the operation the failing graph node stands for."""
    node = failing_node(exc)
    if node is None or node.grad_fn is None:
        return headline(exc)
    with recording_origins(model) as origins:
        try:
            analyse()
        except Exception as again:
            node = failing_node(again) or node
    found = origins.get(node.grad_fn)
    if found is None:
        return f"{headline(exc)} (at graph node {node.name})"
    operation, module = found
    return f"torch-pruning cannot map channels through the {operation} in module {module} ({headline(exc)})"
