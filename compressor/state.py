"""The State every pass reads and returns, and its checkpoint: weights in safetensors, the
rest in JSON. A pruned model is rebuilt from its source plus the recorded pruning history,
so loading a checkpoint never unpickles code."""

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from compressor.errors import CompressorError
from compressor.files import atomic_write
from compressor.inputs import example_input
from compressor.models import build_model, load_weights

STATE_FILE, WEIGHTS_FILE, MASKS_FILE = "state.json", "model.safetensors", "masks.safetensors"


@dataclass
class State:
    model: nn.Module
    source: dict  # {"source": ..., "kwargs": {...}}: how to build the unpruned architecture
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    pruning_history: list[list] = field(default_factory=list)  # one torch-pruning history per pruning step
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter name -> 0/1 mask, kept by training
    teacher: nn.Module | None = None  # frozen snapshot from before the first pruning pass
    teacher_pass: str | None = None  # the pass folder the teacher snapshot is loaded from on resume
    records: list[dict] = field(default_factory=list)  # one per finished pass
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path (model.onnx, …)

    def example_input(self, batch: int = 1, device="cpu") -> torch.Tensor:
        return example_input(self.input_shape, batch, device)

    def snapshot_teacher(self, pass_dir_name: str) -> None:
        if self.teacher is None:
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
            self.teacher_pass = pass_dir_name


def _tensors(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage; tied weights are saved once each.
    return {k: v.detach().cpu().contiguous().clone() for k, v in d.items()}


def rebuild_model(source: dict, history: list[list], input_shape, weights: dict[str, torch.Tensor], origin: str):
    from compressor.pruning.engine import replay

    model = build_model(source["source"], source.get("kwargs"))
    replay(model, history, input_shape)
    load_weights(model, weights, origin)
    return model.eval()


def save_checkpoint(state: State, directory: Path, meta: dict[str, Any]) -> None:
    """Writes weights, masks and state.json into `directory` (state.json last: its presence
    means the checkpoint is complete)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(state.model.state_dict()), str(directory / WEIGHTS_FILE))
    if state.masks:
        save_file(_tensors(state.masks), str(directory / MASKS_FILE))
    doc = {
        **meta,
        "model": state.source,
        "input_shape": list(state.input_shape),
        "pruning_history": state.pruning_history,
        "teacher_pass": state.teacher_pass,
        "records": state.records,
        "artifacts": state.artifacts,
    }
    atomic_write(directory / STATE_FILE, json.dumps(doc, indent=1))


def read_meta(directory: Path) -> dict:
    try:
        return json.loads((directory / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CompressorError(f"'{directory}' is not a compressor checkpoint ({e.__class__.__name__})") from None


def load_checkpoint(directory: Path) -> State:
    directory = Path(directory)
    meta = read_meta(directory)
    weights = load_file(str(directory / WEIGHTS_FILE))
    model = rebuild_model(meta["model"], meta["pruning_history"], meta["input_shape"], weights, str(directory))
    masks = load_file(str(directory / MASKS_FILE)) if (directory / MASKS_FILE).is_file() else {}
    # The teacher is not stored twice: the pipeline reloads it from `teacher_pass`.
    return State(model, meta["model"], tuple(meta["input_shape"]), meta["pruning_history"], masks,
                 teacher_pass=meta.get("teacher_pass"), records=meta["records"], artifacts=meta["artifacts"])
