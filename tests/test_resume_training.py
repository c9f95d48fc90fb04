"""Training checkpoints inside a pass: a training stopped after an epoch continues from there and
ends with the uninterrupted run's weights, to the bit; a checkpoint that does not belong to the
run, or does not fit it, is ignored with a note."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from compressor.cli import app
from compressor.files import sha256_of
from compressor.training import Term, TrainParams, fit
from compressor.training.resume import PROGRESS_FILE, PassCheckpoints
from tests.conftest import TEACHER, needs_fmnist, needs_teacher, write_recipe
from tests.test_training_loop import synthetic_ctx, tiny_state

runner = CliRunner()
# AdamW's state holds a step count beside its moments; the step schedule is replayed on resume.
CFG = TrainParams(epochs=3, lr=0.01, optimizer="adamw", scheduler="step", step_every=1)


class Interrupted(Exception):
    pass


class Counting(Term):
    """A term with both kinds of state: a trained parameter that steers the model (it weights an
    extra loss) and a step count kept in JSON. It can stop the training at an epoch's first step."""

    name = "counting"

    def __init__(self, stop_at: int | None = None):
        self.weight = nn.Parameter(torch.tensor(0.5))
        self.steps, self.stop_at = 0, stop_at

    def parameters(self) -> list[nn.Parameter]:
        return [self.weight]

    def loss(self, step) -> torch.Tensor:
        if step.epoch == self.stop_at:
            raise Interrupted
        self.steps += 1
        return (self.weight * step.outputs).square().mean()

    def end_epoch(self, model, epoch: int) -> dict:
        return {"counted": self.steps}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps = state["steps"]


def train(folder, stop_at: int | None = None, cfg: TrainParams = CFG):
    """One fit of 3 epochs of 4 steps, keeping its checkpoint in `folder`."""
    state, term = tiny_state(), Counting(stop_at)
    ctx = synthetic_ctx(samples=64, batch=16)
    ctx.checkpoints = PassCheckpoints(folder, "the pass's fingerprint", "00-train", writes=True)
    metrics = fit(state, ctx, cfg, [term])
    return [*state.model.state_dict().values(), term.weight.detach()], metrics


def identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted training's weights and metrics."""
    return train(tmp_path_factory.mktemp("reference"))


@pytest.fixture
def stopped(tmp_path):
    """A run folder whose training stopped at the start of its second epoch."""
    with pytest.raises(Interrupted):
        train(tmp_path / "stopped", stop_at=1)
    return tmp_path / "stopped"


def test_a_stopped_fit_resumes_to_the_same_bits_and_a_finished_one_trains_no_more(reference, stopped, capsys):
    weights, ref_metrics = reference
    resumed, metrics = train(stopped)
    assert "resuming 00-train: train at epoch 2/3" in capsys.readouterr().out
    assert identical(resumed, weights) and metrics["counted"] == ref_metrics["counted"] == 12
    again, metrics = train(stopped)  # its checkpoint now holds the last epoch
    assert "resuming 00-train: train after its last epoch (3/3)" in capsys.readouterr().out
    assert identical(again, weights) and metrics["counted"] == 12 and metrics["steps"] == 12


def test_a_checkpoint_that_does_not_belong_or_fit_is_ignored_with_a_note(tmp_path, reference, stopped, capsys):
    capsys.readouterr()
    changed = shutil.copytree(stopped, tmp_path / "changed")
    _, metrics = train(changed, cfg=CFG.model_copy(update={"lr": 0.02}))
    out = capsys.readouterr().out
    assert "note: ignoring the training checkpoint" in out and "changed since it was written" in out
    assert "resuming" not in out and metrics["counted"] == 12  # all three epochs trained

    tampered = shutil.copytree(stopped, tmp_path / "tampered")
    tensors = tampered / "train-1" / "epoch-1.safetensors"
    flipped = bytearray(tensors.read_bytes())
    flipped[-1] ^= 0xFF
    tensors.write_bytes(flipped)
    train(tampered)
    assert "does not match its hash" in capsys.readouterr().out

    # A stranger's checkpoint with the right fingerprint and hash whose term's parameter has another
    # shape: the model and optimiser it loaded first are undone, so the training is the one that
    # never had a checkpoint.
    forged = shutil.copytree(stopped, tmp_path / "forged")
    progress = json.loads((forged / "train-1" / PROGRESS_FILE).read_text())
    tensors = load_file(forged / "train-1" / progress["tensors"])
    tensors["term.0.parameter.0"] = torch.zeros(2)
    save_file(tensors, forged / "train-1" / progress["tensors"])
    progress["sha256"] = sha256_of(forged / "train-1" / progress["tensors"])
    (forged / "train-1" / PROGRESS_FILE).write_text(json.dumps(progress))
    weights, _ = train(forged)
    assert "does not fit what is being trained" in capsys.readouterr().out
    assert identical(weights, reference[0])


def distill_recipe() -> dict:
    """A 3-epoch distillation into a narrower student: its feature adapter is a term's parameter."""
    teacher = {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 16},
               "checkpoint": str(TEACHER)}
    return {"name": "resume", "seed": 0, "threads": 1,
            "model": {"source": "zoo:resnet20", "num_classes": 10, "kwargs": {"in_channels": 1, "width": 8}},
            "data": {"dataset": "fashion-mnist", "train_samples": 256, "eval_samples": 200, "batch_size": 32},
            "passes": [{"type": "distill", "epochs": 3, "lr": 0.02, "teacher": teacher,
                        "features": {"loss": "cwd", "layers": [{"student": "layer3", "teacher": "layer3"}]}}]}


def compress(*args) -> subprocess.Popen:
    # SIGINT as Ctrl-C sends it: a child of a shell that ignores it would inherit that.
    return subprocess.Popen([sys.executable, "-m", "compressor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@needs_fmnist
@needs_teacher
def test_ctrl_c_in_a_distill_pass_then_resume_gives_the_uninterrupted_weights(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", distill_recipe())
    victim = compress("run", str(recipe), "--out", str(tmp_path / "run"))
    checkpoint = tmp_path / "run" / ".00-distill.partial" / "train-1" / PROGRESS_FILE
    deadline = time.time() + 120
    while not checkpoint.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert victim.poll() is None, "the run ended before its first epoch's checkpoint: " + victim.stdout.read()
    victim.send_signal(signal.SIGINT)
    output = " ".join(victim.communicate()[0].split())
    assert victim.returncode == 130 and "the interrupted pass continues from its last finished epoch" in output
    stale = shutil.copytree(tmp_path / "run", tmp_path / "stale")

    assert runner.invoke(app, ["run", str(recipe), "--out", str(stale)]).exit_code == 2  # it holds a run

    resumed = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming 00-distill: distill at epoch" in resumed.output
    reference = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "ref")])
    assert reference.exit_code == 0, reference.output
    for name in ("model.safetensors", "adapters.safetensors"):
        assert (tmp_path / "run" / "00-distill" / name).read_bytes() == \
            (tmp_path / "ref" / "00-distill" / name).read_bytes()
    assert not list((tmp_path / "run").glob("*/train-*")) and not list((tmp_path / "run").glob(".*.partial"))

    changed = runner.invoke(app, ["run", str(recipe), "--out", str(stale), "--resume", "--set", "passes.0.epochs=1"])
    assert changed.exit_code == 0, changed.output
    assert "ignoring the training checkpoint" in changed.output and "distill epoch 1/1" in changed.output
