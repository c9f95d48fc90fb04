"""Training that diverges stops at the step it happens, with one line that says where, which loss,
the lr and what to do; the run folder keeps no checkpoint and no report of the failed pass."""

import math
import re

import pytest
import torch
from typer.testing import CliRunner

from compressor.cli import app
from compressor.errors import CompressorError
from compressor.training import Term, TrainParams, fit
from tests.conftest import write_recipe
from tests.test_training_loop import synthetic_ctx, tiny_state


def run_cli(tmp_path, recipe: dict):
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    out = tmp_path / "run"
    return CliRunner().invoke(app, ["run", str(path), "--out", str(out)]), out


def small(recipe: dict) -> dict:
    recipe["data"].update(train_samples=128, eval_samples=32)
    return recipe


def test_a_huge_lr_stops_the_run_with_one_line_naming_pass_epoch_loss_and_lr(tmp_path, synthetic_recipe):
    recipe = small(synthetic_recipe)
    recipe["passes"] = [{"type": "evaluate"}, {"type": "train", "epochs": 2, "lr": 1e30}, {"type": "evaluate"}]
    result, run = run_cli(tmp_path, recipe)
    assert result.exit_code == 2, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert "Traceback" not in result.output and len([l for l in result.output.splitlines() if "error" in l]) == 1
    assert line.startswith("error: passes[1] (train): training diverged: loss not finite at epoch 1/2, step ")
    assert "ce nan" in line or "ce inf" in line
    assert re.search(r"; lr \d(\.\d+)?e\+(29|30) at this step\); lower lr \(now 1e\+30\), or check the data$", line)
    # The pass before it is kept; the failed pass left no checkpoint, and there is no report at all
    # (at most its scratch folder, which holds no state.json and which the next run removes).
    assert (run / "00-evaluate" / "state.json").is_file()
    assert [p.name for p in run.glob("[0-9][0-9]-*")] == ["00-evaluate"]
    assert not list(run.glob("report.*")) and not list(run.glob(".*.partial/state.json"))
    again = CliRunner().invoke(app, ["run", str(tmp_path / "recipe.yaml"), "--out", str(run), "--resume"])
    assert again.exit_code == 2 and "resuming" in again.output and "training diverged" in again.output
    assert [p.name for p in run.glob("[0-9][0-9]-*")] == ["00-evaluate"] and not list(run.glob("report.*"))


class NanAfter(Term):
    """A loss term that turns NaN at a given step, as a distillation feature loss can."""

    name = "feature"

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def loss(self, step):
        self.calls += 1
        value = step.outputs.float().pow(2).mean() * 0.0
        return value + (math.nan if self.calls == self.at else 0.0)


def test_a_term_that_turns_nan_is_named_with_its_epoch_and_step():
    cfg = TrainParams(epochs=2, lr=0.05)  # 10 steps an epoch
    with pytest.raises(CompressorError) as caught:
        fit(tiny_state(), synthetic_ctx(), cfg, terms=[NanAfter(at=13)])
    message = str(caught.value)
    assert message.startswith("training diverged: loss not finite at epoch 2/2, step 3/10 (feature nan; lr ")
    assert "ce" not in message.split("(")[1].split(";")[0]  # ce stayed finite: only the culprit is named
    assert message.endswith("lower lr (now 0.05), or check the data")


def test_non_finite_data_is_blamed_at_the_first_step_not_the_lr():
    state = tiny_state()
    with torch.no_grad():
        state.model[-1].bias.fill_(math.inf)  # a broken checkpoint: every logit is inf
    with pytest.raises(CompressorError, match=r"^loss not finite at epoch 1/1, step 1/10 \(ce nan; lr 0\.05\), "
                                              r"before any update: the data or the model gives non-finite values"):
        fit(state, synthetic_ctx(), TrainParams(epochs=1, lr=0.05))


def test_finite_training_is_untouched():
    metrics = fit(tiny_state(), synthetic_ctx(), TrainParams(epochs=1, lr=0.05))
    assert math.isfinite(metrics["train_ce"]) and metrics["steps"] == 10
