"""The one training loop. Dense fine-tuning, sparsity-aware training, 2:4 fine-tuning and
distillation are this loop with different terms plugged in."""

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from compressor.console import console, progress
from compressor.training import distributed
from compressor.training.params import TrainParams
from compressor.training.terms import KeepMasks, Step, Term


def _optimizer(params: list[nn.Parameter], cfg: TrainParams) -> torch.optim.Optimizer:
    # No weight decay on norms and biases: decaying a BN scale would fight slimming's own L1.
    decay = [p for p in params if p.ndim > 1]
    plain = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def _lr_factor(cfg: TrainParams, progress_: float) -> float:
    if cfg.scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress_))
    if cfg.scheduler == "step":
        return 0.1 ** int(progress_ * cfg.epochs / cfg.step_every)
    return 1.0


def fit(state, ctx, cfg: TrainParams, terms: list[Term] = (), desc: str = "train", ce_weight: float = 1.0) -> dict:
    """Trains `state.model` in place; the masks in `state` are always kept. Returns metrics.
    `ce_weight` scales the hard-label loss (distillation may lower it or turn it off)."""
    device = ctx.device
    model = state.model.to(device).train()
    terms = list(terms) + ([KeepMasks(state.masks)] if state.masks else [])
    for term in terms:
        term.attach(model)
    term_params = [p for t in terms for p in t.parameters()]
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad] + term_params, cfg)
    loader = ctx.data.train
    forward = model
    if distributed.active():
        loader.shard(distributed.rank(), distributed.world())
        forward = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps_per_epoch = len(loader)
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    epochs = math.ceil(total_steps / steps_per_epoch)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    metrics: dict = {}
    step_index, seen, start = 0, 0, time.perf_counter()
    try:
        with progress() as bar:
            for epoch in range(epochs):
                loader.set_epoch(epoch)
                task = bar.add_task(f"{desc} {epoch + 1}/{epochs}", total=min(steps_per_epoch, total_steps - step_index), info="")
                sums: dict[str, float] = {}
                correct = count = 0
                for inputs, targets in loader:
                    if step_index >= total_steps:
                        break
                    inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * _lr_factor(cfg, step_index / total_steps)
                    with torch.autocast(device.type, enabled=device.type == "cuda"):
                        outputs = forward(inputs)
                        step = Step(inputs, targets, outputs, epoch, step_index / total_steps)
                        losses = {}
                        if ce_weight:
                            losses["ce"] = ce_weight * F.cross_entropy(outputs.float(), targets,
                                                                       label_smoothing=cfg.label_smoothing)
                        for term in terms:
                            extra = term.loss(step)
                            if extra is not None:
                                losses[term.name] = extra
                    total = sum(losses.values())
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(total).backward()
                    scaler.unscale_(optimizer)
                    distributed.average_gradients(term_params)  # DDP averages only the model's own
                    for term in terms:
                        term.before_step(model, step)
                    scaler.step(optimizer)
                    scaler.update()
                    for term in terms:
                        term.after_step(model)
                    step_index += 1
                    n = len(targets)
                    seen += n
                    count += n
                    correct += (outputs.argmax(1) == targets).sum().item()
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v.item() * n
                    rate = seen / (time.perf_counter() - start)
                    shown = " ".join(f"{k} {v / count:.3f}" for k, v in sums.items())
                    bar.update(task, advance=1, info=f"{shown} acc {100 * correct / count:.1f}% {rate:.0f} img/s")
                keys = list(sums)
                totals = distributed.sum_across([sums[k] for k in keys] + [correct, count], device)
                correct, count = totals[-2], max(totals[-1], 1)
                metrics = {f"train_{k}": v / count for k, v in zip(keys, totals)}
                metrics["train_acc"] = 100 * correct / count
                for term in terms:
                    metrics.update(term.end_epoch(model, epoch))
                console.print(f"  {desc} epoch {epoch + 1}/{epochs}: "
                              + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    finally:
        for term in terms:
            term.detach()
    metrics.update(steps=step_index, epochs=cfg.epochs, img_per_s=seen / (time.perf_counter() - start))
    if distributed.active():
        distributed.sync_buffers(model)
        if not distributed.weights_identical(model):
            raise RuntimeError("ranks ended training with different weights: something updates parameters outside DDP")
        metrics.update(world_size=distributed.world(), img_per_s=metrics["img_per_s"] * distributed.world())
    model.eval()
    return metrics
