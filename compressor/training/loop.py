"""The one training loop. Dense fine-tuning, sparsity-aware training, 2:4 fine-tuning and
distillation are this loop with different terms plugged in."""

import math
import time
import warnings
from itertools import islice

import torch
import torch.nn as nn

from compressor.console import console, progress
from compressor.errors import CompressorError
from compressor.tasks import Task
from compressor.training import distributed
from compressor.training.params import TrainParams
from compressor.training.resume import FitCheckpoint, collect, start_digest
from compressor.training.schedule import lr_schedule
from compressor.training.terms import KeepMasks, Step, Term


def _optimizer(params: list[nn.Parameter], cfg: TrainParams) -> torch.optim.Optimizer:
    # No weight decay on norms and biases: decaying a BN scale would fight slimming's own L1.
    decay = [p for p in params if p.ndim > 1]
    plain = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


class _TrainStep:
    """One optimisation step: forward, the losses, backward, the terms' hooks, the update.
    Counts the steps taken, which is where the schedule and `Step.progress` come from."""

    def __init__(self, model: nn.Module, forward: nn.Module, terms: list[Term], term_params: list[nn.Parameter],
                 optimizer: torch.optim.Optimizer, cfg: TrainParams, total_steps: int, task: Task,
                 task_weight: float, device: torch.device):
        self.model, self.forward, self.terms, self.term_params = model, forward, terms, term_params
        self.optimizer, self.cfg, self.device = optimizer, cfg, device
        self.task, self.task_weight = task, task_weight
        self.task_loss = task.criterion(model, cfg.label_smoothing) if task_weight else None
        self.total_steps, self.taken = total_steps, 0
        self.advance_lr = lr_schedule(optimizer, cfg, total_steps)
        self.lr = optimizer.param_groups[0]["lr"]  # what the last step applied (the first group's)
        self.scaler = torch.amp.GradScaler(enabled=self.device.type == "cuda")

    @property
    def remaining(self) -> int:
        return self.total_steps - self.taken

    def resume_at(self, steps: int) -> None:
        """Continues after `steps` steps of a checkpoint. The lr schedule is replayed rather than
        stored: it is a function of the steps it was given, so the replay gives the same floats."""
        with warnings.catch_warnings():
            # torch takes a schedule stepped before the optimiser for a mistake; here it is the replay
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for k in range(1, steps + 1):
                self.advance_lr(k)
        self.taken = steps

    def __call__(self, inputs: torch.Tensor, targets, epoch: int) -> tuple[Step, dict]:
        inputs = inputs.to(self.device, non_blocking=True)
        targets = self.task.move(targets, self.device)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            outputs = self.forward(inputs)
            step = Step(inputs, targets, outputs, epoch, self.taken / self.total_steps)
            losses = self._losses(step)
        self.lr = self.optimizer.param_groups[0]["lr"]
        self._update(sum(losses.values()), step)
        self.taken += 1
        self.advance_lr(self.taken)
        return step, losses

    def _losses(self, step: Step) -> dict[str, torch.Tensor]:
        losses = {}
        if self.task_loss:
            losses = {k: self.task_weight * v for k, v in self.task_loss(step.outputs, step.targets).items()}
        for term in self.terms:
            extra = term.loss(step)
            if extra is not None:
                losses[term.name] = extra
        return losses

    def _update(self, total: torch.Tensor, step: Step) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        distributed.average_gradients(self.term_params)  # DDP averages only the model's own
        for term in self.terms:
            term.before_step(self.model, step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for term in self.terms:
            term.after_step(self.model)


class _Throughput:
    """Images per second since training began, across epochs and across a resume (the time
    between the interruption and the restart left out)."""

    def __init__(self):
        self.seen, self.start = 0, time.perf_counter()

    def add(self, n: int) -> None:
        self.seen += n

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def rate(self) -> float:
        return self.seen / self.seconds()

    def resume(self, seen: int, seconds: float) -> None:
        self.seen, self.start = seen, time.perf_counter() - seconds


class _EpochMeter:
    """Running loss sums (weighted by batch size) over one epoch on this rank, and accuracy where
    the task counts right answers."""

    def __init__(self, task: Task):
        self.task = task
        self.sums: dict[str, float] = {}
        self.correct: int | None = 0
        self.count = 0

    def add(self, step: Step, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Adds one step's batch; returns its losses as floats (the one device sync of the step)."""
        n = len(step.inputs)
        self.count += n
        right = self.task.correct(step.outputs, step.targets)
        self.correct = None if right is None or self.correct is None else self.correct + right
        values = {k: v.item() for k, v in losses.items()}
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * n
        return values

    def info(self, rate: float) -> str:
        shown = " ".join(f"{k} {v / self.count:.3f}" for k, v in self.sums.items())
        acc = "" if self.correct is None else f" acc {100 * self.correct / self.count:.1f}%"
        return f"{shown}{acc} {rate:.0f} img/s"

    def reduce(self, device: torch.device) -> dict:
        """`train_<loss>`, and `train_acc` where counted, over every rank's samples."""
        keys = list(self.sums)
        totals = distributed.sum_across([self.sums[k] for k in keys] + [self.correct or 0, self.count], device)
        correct, count = totals[-2], max(totals[-1], 1)
        metrics = {f"train_{k}": v / count for k, v in zip(keys, totals)}
        if self.correct is not None:
            metrics["train_acc"] = 100 * correct / count
        return metrics


def _distribute(loader, model: nn.Module, device: torch.device):
    """Under torchrun: this rank's shard of the data, and the model wrapped in DDP."""
    if not distributed.active():
        return loader, model
    loader.shard(distributed.rank(), distributed.world())
    return loader, nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


FLOAT32_MAX = torch.finfo(torch.float32).max


def _stop_if_diverged(values: dict[str, float], train: _TrainStep, where: str) -> None:
    """Raises where the step's total loss is not finite (inf or NaN), naming the terms that
    were not; `values` are the losses already read back for the meter, so this costs no sync."""
    total = sum(values.values())
    if math.isfinite(total) and abs(total) <= FLOAT32_MAX:
        return
    bad = ", ".join(f"{k} {v}" for k, v in values.items() if not math.isfinite(v))
    what = bad or "their sum " + " + ".join(f"{k} {v:.3g}" for k, v in values.items()) + " overflows float32"
    if train.taken == 1:  # the first loss comes from the untouched model: no update caused it
        raise CompressorError(
            f"loss not finite at {where} ({what}; lr {train.lr:.3g}), before any update: the data or the model "
            f"gives non-finite values; check the data (inputs and labels) and the model's weights")
    raise CompressorError(f"training diverged: loss not finite at {where} ({what}; lr {train.lr:.3g} at this "
                          f"step); lower lr (now {train.cfg.lr:g}), or check the data")


def _epoch(train: _TrainStep, loader, epoch: int, epochs: int, bar, task, desc: str,
           throughput: _Throughput) -> dict:
    """One epoch; `task` is the bar's, which counts the steps of the whole fit (so its eta does)."""
    loader.set_epoch(epoch)
    batches = min(len(loader), train.remaining)
    bar.update(task, description=f"{desc} {epoch + 1}/{epochs}")
    meter = _EpochMeter(train.task)
    for index, (inputs, targets) in enumerate(islice(loader, batches)):
        step, losses = train(inputs, targets, epoch)
        values = meter.add(step, losses)
        _stop_if_diverged(values, train, f"epoch {epoch + 1}/{epochs}, step {index + 1}/{batches}")
        throughput.add(len(step.inputs))
        bar.update(task, advance=1, info=meter.info(throughput.rate()))
    metrics = meter.reduce(train.device)
    for term in train.terms:
        metrics.update(term.end_epoch(train.model, epoch))
    console.print(f"  {desc} epoch {epoch + 1}/{epochs}: "
                  + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


def _check_ranks_agree(model: nn.Module, metrics: dict) -> None:
    if not distributed.active():
        return
    distributed.sync_buffers(model)
    if not distributed.weights_identical(model):
        raise RuntimeError("ranks ended training with different weights: something updates parameters outside DDP")
    metrics.update(world_size=distributed.world(), img_per_s=metrics["img_per_s"] * distributed.world())


def _resume(ctx, train: _TrainStep, epochs: int, throughput: _Throughput,
            settings: dict) -> tuple[FitCheckpoint | None, int, dict]:
    """This call's training checkpoint, the epoch to start at and the metrics of the epoch before
    it: where the checkpoint holds finished epochs, they are loaded and the call continues after
    them. A context that keeps no checkpoints (one a test or an export makes) starts at 0."""
    checkpoints = getattr(ctx, "checkpoints", None)
    if checkpoints is None:
        return None, 0, {}
    fresh = collect(train)
    identity = {**settings, "terms": [t.name for t in train.terms], "steps": train.total_steps,
                "device": train.device.type, "world": distributed.world(), "start": start_digest(fresh)}
    checkpoint = checkpoints.next_call(identity, settings["desc"])
    progress = checkpoint.restore(train, fresh, epochs)
    if progress is None:
        return checkpoint, 0, {}
    train.resume_at(progress.steps)
    throughput.resume(progress.images, progress.seconds)
    where = (f"at epoch {progress.epoch + 1}/{epochs}" if progress.epoch < epochs
             else f"after its last epoch ({epochs}/{epochs}): its weights are loaded")
    console.print(f"[dim]resuming {checkpoint.label} {where}[/dim]")
    return checkpoint, progress.epoch, progress.metrics


def fit(state, ctx, cfg: TrainParams, terms: list[Term] = (), desc: str = "train", task_weight: float = 1.0) -> dict:
    """Trains `state.model` in place on the task's own loss plus `terms`; the masks in `state`
    are always kept. Returns metrics. `task_weight` scales the task's loss (the hard labels:
    distillation may lower it or turn it off)."""
    device = ctx.device
    model = state.model.to(device).train()
    terms = list(terms) + ([KeepMasks(state.masks)] if state.masks else [])
    for term in terms:
        term.attach(model)
    term_params = [p for t in terms for p in t.parameters()]
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad] + term_params, cfg)
    loader, forward = _distribute(ctx.data.train, model, device)
    total_steps = max(1, round(cfg.epochs * len(loader)))
    epochs = math.ceil(total_steps / len(loader))
    train = _TrainStep(model, forward, terms, term_params, optimizer, cfg, total_steps, ctx.task, task_weight, device)
    throughput = _Throughput()
    try:
        checkpoint, start, metrics = _resume(ctx, train, epochs, throughput,
                                             {"desc": desc, "train": cfg.model_dump(mode="json"),
                                              "task_weight": task_weight, "batches": len(loader)})
        with progress() as bar:
            task = bar.add_task(desc, total=total_steps, completed=train.taken, info="")
            for epoch in range(start, epochs):
                metrics = _epoch(train, loader, epoch, epochs, bar, task, desc, throughput)
                if checkpoint:
                    checkpoint.save(train, epoch + 1, metrics, throughput.seen, throughput.seconds())
    finally:
        for term in terms:
            term.detach()
    metrics.update(steps=train.taken, epochs=cfg.epochs, img_per_s=throughput.rate())
    _check_ranks_agree(model, metrics)
    model.eval()
    return metrics
