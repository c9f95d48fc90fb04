"""The State every pass reads and returns, and its checkpoint: weights in safetensors, the
rest in JSON. A pruned model is rebuilt from its source plus the recorded pruning history,
so loading a checkpoint never unpickles code."""

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field, NonNegativeInt, PositiveInt, TypeAdapter, ValidationError, field_validator
from safetensors.torch import load_file, save_file

from compressor.errors import CompressorError
from compressor.files import atomic_write, cpu_tensors, sha256_of
from compressor.inputs import example_input
from compressor.models import NO_TRUST, Trust, build_model, load_weights
from compressor.schema import Loose, PassFolder, PlainName, Record

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
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> file name in the run folder (model.onnx, …)

    def example_input(self, batch: int = 1, device="cpu") -> torch.Tensor:
        return example_input(self.input_shape, batch, device)

    def snapshot_teacher(self, pass_dir_name: str) -> None:
        if self.teacher is None:
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)
            self.teacher_pass = pass_dir_name


def rebuild_model(source: dict, history: list[list], input_shape, weights: dict[str, torch.Tensor], origin: str,
                  trust: Trust = NO_TRUST):
    from compressor.pruning.engine import replay

    model = build_model(source["source"], source.get("kwargs"), trust)
    replay(model, history, input_shape)
    load_weights(model, weights, origin)
    return model.eval()


def save_checkpoint(state: State, directory: Path, meta: dict[str, Any]) -> None:
    """Writes weights, masks and state.json into `directory` (state.json last: its presence
    means the checkpoint is complete; it holds the hash of every file beside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(cpu_tensors(state.model.state_dict()), str(directory / WEIGHTS_FILE))
    if state.masks:
        save_file(cpu_tensors(state.masks), str(directory / MASKS_FILE))
    files = [WEIGHTS_FILE] + ([MASKS_FILE] if state.masks else [])
    doc = {
        **meta,
        "model": state.source,
        "input_shape": list(state.input_shape),
        "pruning_history": state.pruning_history,
        "teacher_pass": state.teacher_pass,
        "records": state.records,
        "artifacts": state.artifacts,
        "hashes": {name: sha256_of(directory / name) for name in files},
    }
    atomic_write(directory / STATE_FILE, json.dumps(doc, indent=1))


MAX_INPUT_ELEMENTS = 1 << 28  # one sample: more than any image model here takes


class SourceRecord(Loose):
    source: str
    kwargs: dict[str, Any] | None = None


class CheckpointMeta(Loose):
    """What state.json must hold before anything acts on it: it may come from a stranger, so
    every name that becomes a path is a plain name inside the run folder."""

    index: int | None = None
    type: str | None = None
    fingerprint: str | None = None
    model: SourceRecord
    input_shape: list[PositiveInt] = Field(min_length=1, max_length=4)
    pruning_history: list[list[tuple[str, bool | Literal["heads"], list[NonNegativeInt]]]]
    teacher_pass: PassFolder | Literal["input"] | None = None
    records: list[Record]
    artifacts: dict[str, PlainName]
    hashes: dict[Literal["model.safetensors", "masks.safetensors"], str]

    @field_validator("input_shape")
    @classmethod
    def _bounded(cls, shape: list[int]) -> list[int]:
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ValueError(f"an input of {math.prod(shape):,} values per sample is not an image model's")
        return shape


def read_meta(directory: Path) -> dict:
    path = Path(directory) / STATE_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CompressorError(f"'{path}' is not a compressor checkpoint's state file ({e.__class__.__name__})") from None
    try:
        return CheckpointMeta.model_validate(doc).model_dump(mode="json", exclude_none=False)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"])) or "state.json"
        raise CompressorError(f"{path} is not a checkpoint this version of compress wrote: {where}: "
                              f"{first['msg']}; run the recipe again with --fresh") from None


def verify(directory: Path, meta: dict) -> None:
    """Every file the checkpoint holds is the one state.json was written with."""
    for name, expected in meta["hashes"].items():
        path = Path(directory) / name
        if not path.is_file():
            raise CompressorError(f"{path} is missing: the checkpoint in {directory} is incomplete; "
                                  "run with --fresh to start over")
        if sha256_of(path) != expected:
            raise CompressorError(f"{path} changed after it was written (it does not match the hash in "
                                  f"{STATE_FILE}); run with --fresh to start over")
    if WEIGHTS_FILE not in meta["hashes"]:
        raise CompressorError(f"{directory / STATE_FILE} lists no {WEIGHTS_FILE}; run with --fresh to start over")


def _tensors_in(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # a truncated or foreign file
        raise CompressorError(f"cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                              "run with --fresh to start over") from None


def load_checkpoint(directory: Path, trust: Trust = NO_TRUST) -> State:
    """The State a finished pass saved. The model is rebuilt from its source and pruning
    history (a source that runs code only where `trust` allows it), its files checked against
    their hashes first."""
    directory = Path(directory)
    meta = read_meta(directory)
    verify(directory, meta)
    weights = _tensors_in(directory / WEIGHTS_FILE)
    model = rebuild_model(meta["model"], meta["pruning_history"], meta["input_shape"], weights, str(directory), trust)
    masks = _tensors_in(directory / MASKS_FILE) if MASKS_FILE in meta["hashes"] else {}
    # The teacher is not stored twice: the pipeline reloads it from `teacher_pass`.
    return State(model, meta["model"], tuple(meta["input_shape"]), meta["pruning_history"], masks,
                 teacher_pass=meta.get("teacher_pass"), records=meta["records"], artifacts=meta["artifacts"])


def artifact_path(artifacts: dict, key: str, folder: Path) -> Path | None:
    """The file an artifact names, inside `folder` (the run folder): state.json keeps file names,
    so a checkpoint cannot point a pass at a file elsewhere."""
    value = artifacts.get(key)
    if not value:
        return None
    name = str(value)
    try:
        TypeAdapter(PlainName).validate_python(name)
    except ValidationError:
        raise CompressorError(f"the checkpoint's artifact '{key}' is {str(value)[:80]!r}, not a file name in the "
                              "run folder") from None
    return Path(folder) / name
