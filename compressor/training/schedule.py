"""The learning-rate schedules of `TrainParams.scheduler`, as torch schedulers. The lr of step k
of `total` is `lr * f(k / total)`: cosine 0.5 * (1 + cos(pi * p)), step
0.1 ** int(p * epochs / step_every), constant 1, and each arrangement below gives exactly
those floats (tests/test_training_loop.py holds them to it)."""

import warnings
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingWarmRestarts, LRScheduler, SequentialLR

from compressor.training.params import TrainParams

# GradScaler skips optimizer.step() when the gradients overflow, which torch then mistakes for
# stepping the scheduler first. The schedule follows the step count either way.
_SKIPPED_STEP = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"


def lr_schedule(optimizer: Optimizer, cfg: TrainParams, total_steps: int) -> Callable[[int], None]:
    """Sets the lr of step 0 now; returns `advance(k)`, to call once step k - 1 has updated."""
    if cfg.scheduler == "cosine":
        # One restart period spanning the run, stepped by the fraction done: the closed form
        # then evaluates cos(pi * (k / total)) exactly as written above. CosineAnnealingLR's
        # recursive update, or its cos(pi * k / total), differs in the last bit.
        cosine = CosineAnnealingWarmRestarts(optimizer, T_0=1)
        return lambda k: cosine.step(k / total_steps)
    if cfg.scheduler == "step":
        scheduler = _step_decay(optimizer, cfg, total_steps)
    else:
        scheduler = ConstantLR(optimizer, factor=1.0, total_iters=0)
    return lambda k: _step_quietly(scheduler)


def _step_decay(optimizer: Optimizer, cfg: TrainParams, total_steps: int) -> SequentialLR:
    # StepLR and MultiStepLR multiply the running lr by 0.1 at each decay, which drifts from
    # lr * 0.1 ** n in the last bit; one ConstantLR per plateau scales the base lr directly.
    # Plateaus are found per step because step_every need not be a whole number of steps.
    decays = [int(k / total_steps * cfg.epochs / cfg.step_every) for k in range(total_steps)]
    starts = [k for k in range(total_steps) if k == 0 or decays[k] != decays[k - 1]]
    # total_iters past the run, so no plateau ever restores the base lr itself.
    plateaus = [ConstantLR(optimizer, factor=0.1 ** decays[k], total_iters=total_steps + 1) for k in starts]
    return SequentialLR(optimizer, plateaus, milestones=starts[1:])


def _step_quietly(scheduler: LRScheduler) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SKIPPED_STEP, category=UserWarning)
        scheduler.step()
