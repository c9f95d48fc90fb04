"""Training checkpoints inside a pass: an interrupted pass that trains continues from its last
finished epoch with --resume, and ends with the weights an uninterrupted run ends with.

The K-th `fit` call of a pass keeps its checkpoint in the pass's partial folder, rewritten at
the end of every epoch:

    .NN-type.partial/train-K/
      epoch-E.safetensors   the model, the optimiser's and the terms' tensors, the RNG states
      progress.json         the rest: epochs and steps done, the last epoch's metrics, the grad
                            scaler, the terms' other values, the fingerprint and the hash of
                            epoch-E.safetensors. Written last, so a run killed mid-write still
                            finds the previous epoch whole.

How a resumed pass gets back to where it stopped: the pipeline runs the pass again from its
start, under the same seed, so its code before `fit` (loading the teacher, a prune step, making
adapters) rebuilds the very objects the interrupted run trained: the architecture, the terms,
the optimiser's parameter order. That code is cheap next to training, and re-running it is
exact for every pass, where storing its results would need a format for each pass's own
objects. A `fit` call that had finished loads its last epoch and trains no more, so the pass's
code after it (the next prune step) sees the same weights and random state as before; the lr
schedule is replayed from the step count, not stored.

The fingerprint proves the rebuild reached the same point: the recipe's for the pass, the call's
own settings, and a hash of the model, the terms and the RNG as the call starts. Where it differs
(the recipe changed, or the code before `fit` is not deterministic, as a prune to a measured
latency is not), the checkpoint is ignored with a note and the call trains from its first epoch.

A run folder may be a stranger's: the checkpoint is read with safetensors and JSON only,
progress.json is validated, its tensor file has a fixed name pattern and must match its hash,
and a checkpoint that does not fit the rebuilt model leaves the fresh state as it was. Under
torchrun only rank 0 writes; every rank loads the same files.

The pipeline keeps a partial folder holding a checkpoint when the run is interrupted (Ctrl-C)
or killed, deletes it when the pass fails, and drops the checkpoints once the pass finishes."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, ValidationError
from safetensors.torch import load_file, save_file

from compressor.console import console
from compressor.files import atomic_write, cpu_tensors, replacing, sha256_of
from compressor.schema import Loose

PROGRESS_FILE = "progress.json"
TRAIN_GLOB = "train-*"


class Progress(Loose):
    """progress.json, checked before anything in it is used."""

    fingerprint: str
    epoch: NonNegativeInt  # epochs finished
    steps: NonNegativeInt
    tensors: str = Field(pattern=r"^epoch-[0-9]+\.safetensors$")
    sha256: str
    metrics: dict[str, Any]
    images: NonNegativeInt  # seen so far, and the seconds they took: the throughput carries on
    seconds: NonNegativeFloat
    optimizer: dict[str, dict[str, Any]]  # the optimiser's values that are not tensors, by parameter index
    scaler: dict[str, float | int]
    terms: list[dict[str, Any]]  # each term's values that are not tensors


def holds_training_checkpoint(folder: Path) -> bool:
    """Only real folders count: a symlink in a stranger's run folder would lead writes elsewhere."""
    folder = Path(folder)
    return not folder.is_symlink() and any(not p.parent.is_symlink()
                                           for p in folder.glob(f"{TRAIN_GLOB}/{PROGRESS_FILE}"))


def drop_training_checkpoints(folder: Path) -> None:
    """A finished pass needs them no more (they hold the optimiser's state: as large as the model)."""
    for checkpoint in Path(folder).glob(TRAIN_GLOB):
        if checkpoint.is_symlink():
            checkpoint.unlink()
        else:
            shutil.rmtree(checkpoint)


class PassCheckpoints:
    """Where the running pass's `fit` calls keep their checkpoints (RunContext.checkpoints):
    `folder` is the pass's partial folder in the run folder, the same path on every rank."""

    def __init__(self, folder: Path, fingerprint: str, label: str, writes: bool):
        self.folder, self.fingerprint, self.label, self.writes = Path(folder), fingerprint, label, writes
        self.calls = 0

    def next_call(self, identity: dict, desc: str) -> "FitCheckpoint":
        """The checkpoint of the pass's next `fit` call; `identity` is what decides its result
        besides the recipe (its settings and `start_digest` of what it starts from)."""
        self.calls += 1
        doc = {"pass": self.fingerprint, "call": self.calls, **identity}
        fingerprint = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
        return FitCheckpoint(self.folder / f"train-{self.calls}", fingerprint, f"{self.label}: {desc}", self.writes)


def collect(train) -> tuple[dict, dict[str, torch.Tensor]]:
    """Everything a resumed `fit` restores, as (JSON values, tensors). `train` is the loop's
    step: its model, optimizer, scaler, terms and device."""
    tensors = {f"model.{k}": v for k, v in train.model.state_dict().items()}
    optimizer: dict[str, dict] = {}
    for index, values in train.optimizer.state_dict()["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                optimizer.setdefault(str(index), {})[name] = value
    values = []
    for j, term in enumerate(train.terms):
        own = term.state_dict()
        tensors.update({f"term.{j}.{k}": v for k, v in own.items() if isinstance(v, torch.Tensor)})
        values.append({k: v for k, v in own.items() if not isinstance(v, torch.Tensor)})
    tensors["rng.cpu"] = torch.get_rng_state()
    if train.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(train.device)
    return {"optimizer": optimizer, "scaler": train.scaler.state_dict(), "terms": values}, cpu_tensors(tensors)


def start_digest(state: tuple[dict, dict[str, torch.Tensor]]) -> str:
    """A hash of `collect`'s result: equal only for the same weights, terms and random state."""
    values, tensors = state
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _under(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load(train, values: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Puts `collect`'s result back. Raises (KeyError, ValueError, …) where it does not fit."""
    own = train.model.state_dict()
    weights = _under(tensors, "model.")
    if weights.keys() != own.keys() or any(weights[k].shape != v.shape or weights[k].dtype != v.dtype
                                           for k, v in own.items()):
        raise ValueError("its model has other tensors than the one being trained")
    train.model.load_state_dict(weights)
    params = [p for group in train.optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, value in _under(tensors, "optimizer.").items():
        index, name = key.split(".", 1)
        if value.ndim and value.shape != params[int(index)].shape:  # torch would broadcast it, not refuse
            raise ValueError(f"its optimiser state {key} has shape {tuple(value.shape)}")
        state.setdefault(int(index), {})[name] = value
    for index, extra in values["optimizer"].items():
        state.setdefault(int(index), {}).update(extra)
    # The fresh optimiser's groups stay: their lr is the schedule's, which the loop replays.
    train.optimizer.load_state_dict({"state": state, "param_groups": train.optimizer.state_dict()["param_groups"]})
    if train.scaler.is_enabled():
        train.scaler.load_state_dict(values["scaler"])
    if len(values["terms"]) != len(train.terms):
        raise ValueError(f"it has {len(values['terms'])} terms, not {len(train.terms)}")
    for j, term in enumerate(train.terms):
        term.load_state_dict({**values["terms"][j], **_under(tensors, f"term.{j}.")})
    torch.set_rng_state(tensors["rng.cpu"])
    if train.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], train.device)


class FitCheckpoint:
    """One `fit` call's checkpoint: `save` at the end of every epoch, `restore` once at the start."""

    def __init__(self, folder: Path, fingerprint: str, label: str, writes: bool):
        self.folder, self.fingerprint, self.label, self.writes = folder, fingerprint, label, writes

    def save(self, train, epoch: int, metrics: dict, images: int, seconds: float) -> None:
        """After `epoch` epochs (counted from 1). Only the rank that writes the run folder writes."""
        if not self.writes:
            return
        values, tensors = collect(train)
        if self.folder.is_symlink():  # a stranger's, leading elsewhere: this folder is written here
            self.folder.unlink()
        name = f"epoch-{epoch}.safetensors"
        with replacing(self.folder / name) as tmp:
            save_file(tensors, str(tmp))
        progress = {"fingerprint": self.fingerprint, "epoch": epoch, "steps": train.taken, "tensors": name,
                    "sha256": sha256_of(self.folder / name), "metrics": metrics, "images": images,
                    "seconds": seconds, **values}
        atomic_write(self.folder / PROGRESS_FILE, json.dumps(progress, indent=1))
        for old in self.folder.glob("epoch-*.safetensors"):
            if old.name != name:
                old.unlink()

    def restore(self, train, fresh: tuple[dict, dict[str, torch.Tensor]], epochs: int) -> Progress | None:
        """Loads the checkpoint into `train` (`collect`'s argument) and returns its progress, or returns
        None where there is none to continue from. `fresh` is `collect`'s result as the call
        starts: a checkpoint that turns out not to fit is undone with it."""
        progress = self._read()
        if progress is None:
            return None
        if progress.epoch > epochs or progress.steps > train.total_steps:
            return self._ignore(f"it counts {progress.epoch} epochs and {progress.steps} steps, more than the "
                                f"{epochs} and {train.total_steps} this training has")
        path = self.folder / progress.tensors
        try:
            tensors = load_file(str(path))
        except Exception as e:  # a foreign file that passed the hash check
            return self._ignore(f"cannot read {path.name} ({type(e).__name__})")
        try:
            _load(train, {k: getattr(progress, k) for k in ("optimizer", "scaler", "terms")}, tensors)
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as e:
            _load(train, *fresh)
            return self._ignore(f"it does not fit what is being trained ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'})")
        return progress

    def _read(self) -> Progress | None:
        path = self.folder / PROGRESS_FILE
        if not path.is_file():
            return None
        try:
            progress = Progress.model_validate(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as e:
            return self._ignore(f"{PROGRESS_FILE} is not one this version of compress wrote ({type(e).__name__})")
        if progress.fingerprint != self.fingerprint:
            return self._ignore("the recipe, or what this training starts from, changed since it was written")
        tensors = self.folder / progress.tensors
        if not tensors.is_file() or sha256_of(tensors) != progress.sha256:
            return self._ignore(f"{progress.tensors} is missing or does not match its hash in {PROGRESS_FILE}")
        return progress

    def _ignore(self, why: str) -> None:
        console.print(f"[yellow]note:[/yellow] ignoring the training checkpoint {self.folder}: {why}; "
                      f"{self.label} trains from epoch 1", soft_wrap=True)
        return None
