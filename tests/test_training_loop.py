"""The one training loop: the lr each step applies follows the closed-form schedule to the bit,
and a short fit returns the epoch's metrics, keeps the masks and detaches its terms."""

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from compressor.data.loader import Preprocess, TensorLoader
from compressor.tasks.classification import Classification
from compressor.state import State
from compressor.training import Term, TrainParams, fit
from compressor.training.schedule import lr_schedule
from tests.conftest import needs_fmnist


def closed_form(cfg: TrainParams, k: int, total: int) -> float:
    """The schedule as documented: lr * f(k / total) before step k."""
    p = k / total
    if cfg.scheduler == "cosine":
        return cfg.lr * (0.5 * (1 + math.cos(math.pi * p)))
    if cfg.scheduler == "step":
        return cfg.lr * 0.1 ** int(p * cfg.epochs / cfg.step_every)
    return cfg.lr * 1.0


class AppliedLr(Term):
    """Measures the lr each step applies: a 0-d float64 probe (so no weight decay) given
    gradient 1 moves by exactly -lr under SGD without momentum."""

    name = "applied_lr"

    def __init__(self):
        self.probe = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.lrs: list[float] = []
        self.progress: list[float] = []
        self.detached = False

    def parameters(self) -> list[nn.Parameter]:
        return [self.probe]

    def before_step(self, model, step) -> None:
        self.probe.grad = torch.ones_like(self.probe)
        self.progress.append(step.progress)

    @torch.no_grad()
    def after_step(self, model) -> None:
        self.lrs.append(-self.probe.item())
        self.probe.zero_()

    def detach(self) -> None:
        self.detached = True


def tiny_state(masks: bool = False) -> State:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    kept = {}
    if masks:
        kept = {"0.weight": torch.ones_like(model[0].weight)}
        kept["0.weight"][1] = 0
    return State(model, {"source": "toy", "kwargs": {}}, (1, 8, 8), masks=kept)


def synthetic_ctx(samples: int = 160, batch: int = 16) -> SimpleNamespace:
    """What `fit` reads from a RunContext: the training loader and the device."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (samples, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (samples,), generator=g)
    train = TensorLoader(images, labels, batch, Preprocess((0.5,), (0.25,), 1, 8), shuffle=True, seed=0)
    return SimpleNamespace(data=SimpleNamespace(train=train), device=torch.device("cpu"), task=Classification())


@pytest.mark.parametrize("kind", ["cosine", "step", "constant"])
def test_every_step_applies_the_closed_form_lr(kind):
    cfg = TrainParams(epochs=2.5, lr=0.01, momentum=0.0, scheduler=kind, step_every=0.5)
    ctx = synthetic_ctx()
    probe = AppliedLr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = fit(tiny_state(), ctx, cfg, terms=[probe])
    total = metrics["steps"]
    assert total == round(2.5 * len(ctx.data.train)) == 25
    assert probe.lrs == [closed_form(cfg, k, total) for k in range(total)]
    assert probe.progress == [k / total for k in range(total)]
    assert not [w for w in caught if "lr_scheduler" in w.filename or "scheduler" in str(w.message)]
    if kind == "step":
        assert len(set(probe.lrs)) == 5  # decays at each half epoch


@pytest.mark.parametrize("kind", ["cosine", "step", "constant"])
def test_schedule_matches_the_closed_form_for_many_run_lengths(kind):
    lrs = [0.05, 0.01, 0.003, 0.3]  # 0.01 and 0.3 drift under StepLR's repeated * 0.1
    cfg = TrainParams(lr=lrs[0], epochs=7, scheduler=kind, step_every=0.3)
    for total in range(1, 121):
        optimizer = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs])
        advance = lr_schedule(optimizer, cfg, total)
        for k in range(total):
            got = [group["lr"] for group in optimizer.param_groups]
            want = [closed_form(cfg.model_copy(update={"lr": lr}), k, total) for lr in lrs]
            assert got == want, (total, k)
            optimizer.step()
            advance(k + 1)


def test_fit_returns_epoch_metrics_keeps_masks_and_detaches_terms():
    cfg = TrainParams(epochs=1.5, lr=0.05)
    state = tiny_state(masks=True)
    probe = AppliedLr()
    metrics = fit(state, synthetic_ctx(), cfg, terms=[probe], desc="check")
    assert {"train_ce", "train_acc", "steps", "epochs", "img_per_s"} <= set(metrics)
    assert metrics["steps"] == 15 and metrics["epochs"] == 1.5
    assert 0 <= metrics["train_acc"] <= 100 and metrics["train_ce"] > 0 and metrics["img_per_s"] > 0
    assert torch.all(state.model[0].weight[1] == 0)
    assert probe.detached and not state.model.training


@needs_fmnist
def test_a_short_fit_on_fashion_mnist_returns_its_metrics():
    from compressor.data import load_data
    from compressor.recipe import DataSpec

    data = load_data(DataSpec(dataset="fashion-mnist", train_samples=512, batch_size=32, augment=False), 0)
    ctx = SimpleNamespace(data=data, device=torch.device("cpu"), task=Classification())
    metrics = fit(tiny_state(), ctx, TrainParams(epochs=2, lr=0.1))
    assert {"train_ce", "train_acc", "steps"} <= set(metrics)
    assert metrics["steps"] == 32 and 0 <= metrics["train_acc"] <= 100
