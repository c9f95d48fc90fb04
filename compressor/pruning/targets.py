"""How much to prune. A search gives each pruning step its pruned copy: by a fixed ratio, by a
MACs or parameter budget (`bisect` finds the least pruning that lands on it), or by a latency
measured on a real backend (ZipLM's point: the target is what the device shows, not what MACs
promise)."""

import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from compressor.errors import CompressorError
from compressor.measure import count_macs_params
from compressor.pruning.engine import Plan, clone, prune_step, step_share
from compressor.pruning.graph import IGNORED, Survey
from compressor.pruning.inspection import BreakingGroups, breaking_groups, fewest_to_ignore
from compressor.runtime import onnx as ox
from compressor.runtime.backends import BACKENDS, Candidate, Settings
from compressor.runtime.latency import interleaved, paired_speedup


@dataclass
class Trial:
    ratio: float
    model: nn.Module
    entries: list
    macs: int
    params: int
    measured: dict | None = None  # latency of this copy, when it was timed
    skipped: dict[str, str] = field(default_factory=dict)  # groups torch-pruning left whole -> why


class OutOfReach(CompressorError):
    """The most pruning the plan allows does not reach a MACs or parameter target."""


def _every_culprit(model: nn.Module, example: torch.Tensor, plan: Plan, ratio: float, survey: Survey,
                   failure: CompressorError) -> CompressorError:
    """The error for a step that failed with `failure`: every group that breaks at this ratio,
    as few layers as keep them all whole, so that one run tells what to ignore; `failure`
    itself where the groups alone do not break (heads, say)."""
    broken = breaking_groups(model, example, survey, plan, ratio).broken
    needed = fewest_to_ignore(model, example, survey, plan, ratio, list(broken))
    return BreakingGroups({root: broken[root] for root in needed}) if needed else failure


def prune_copy(model: nn.Module, example: torch.Tensor, plan: Plan, ratio: float, survey: Survey) -> Trial:
    twin = clone(model)
    try:
        cut = prune_step(twin, example, plan, ratio, survey)
    except CompressorError as failure:  # a group torch-pruning cannot cut, or a model that no longer runs
        raise _every_culprit(model, example, plan, ratio, survey, failure) from None
    return Trial(ratio, twin, cut.entries, *count_macs_params(twin, example), skipped=cut.skipped)


def _groups(n: int) -> str:
    return f"{n} group{'s' if n != 1 else ''}"


def _what_limits(plan: Plan, survey: Survey, most: Trial) -> str:
    """What keeps the channels that the most pruning the plan allows leaves."""
    ignored = [g for g in survey.groups if g.reason and g.reason.startswith(IGNORED)]
    fixed = [g for g in survey.groups if g.reason and g not in ignored]
    limits = [f"no layer loses more than max_ratio_per_layer ({plan.max_ratio:.3g})"]
    if most.skipped:
        root, why = next(iter(most.skipped.items()))
        limits.append(f"torch-pruning left {len(most.skipped)} of the {_groups(len(survey.prunable))} it could cut "
                      f"whole ('{root}': {why})")
    if fixed:
        limits.append(f"{_groups(len(fixed))} cannot be pruned ('{fixed[0].root}': {fixed[0].reason})")
    if ignored:
        limits.append(f"ignore keeps {_groups(len(ignored))} whole")
    advice = ["raise max_ratio_per_layer", *(["un-ignore layers"] if ignored else []), "or ask for less"]
    return f"{'; '.join(limits)}. {', '.join(advice)}"


def bisect(model: nn.Module, example: torch.Tensor, plan: Plan, survey: Survey, key: str, goal: float,
           tolerance: float = 0.01, rounds: int = 12) -> Trial:
    """The least-pruned copy of `model` whose `key` ('macs' or 'params') is at most `goal`.
    The search brackets the ratio; it interpolates (MACs fall smoothly with the ratio, so a few
    trials land) and halves the bracket whenever interpolation gains less than that would."""
    start = dict(zip(("macs", "params"), count_macs_params(model, example)))[key]
    most = prune_copy(model, example, plan, plan.max_ratio, survey)
    if getattr(most, key) > goal:
        raise OutOfReach(f"{key} target out of reach: the most pruning allowed keeps {getattr(most, key) / start:.3f} "
                         f"of this step's {key}: {_what_limits(plan, survey, most)}")
    (low, above), (high, best) = (0.0, start), (plan.max_ratio, most)
    interpolate = True
    for _ in range(rounds):
        width = high - low
        if goal - getattr(best, key) <= tolerance * goal or width < 1e-3:
            break
        ratio = low + (above - goal) / (above - getattr(best, key)) * width if interpolate else low + width / 2
        ratio = min(max(ratio, low + 0.02 * width), high - 0.02 * width)
        trial = prune_copy(model, example, plan, ratio, survey)
        if getattr(trial, key) > goal:
            low, above = ratio, getattr(trial, key)
        else:
            high, best = ratio, trial
        interpolate = not interpolate or (high - low) < width / 2
    return best


class LatencyProbe:
    """Times candidates against a fixed reference model on one backend, interleaved in one
    process so that drift on a shared machine hits both alike."""

    def __init__(self, reference: nn.Module, input_shape, backend: str, batch: int, threads: int,
                 device: torch.device, warmup: int, iters: int):
        self.input_shape, self.batch, self.warmup, self.iters = tuple(input_shape), batch, warmup, iters
        self.backend = BACKENDS.get(backend)
        self.folder = tempfile.TemporaryDirectory(prefix="compressor-latency-")
        self.settings = Settings(threads=threads, device=device, workdir=Path(self.folder.name))
        reason = self.backend.unavailable(self.settings)
        if reason:
            self.close()
            raise CompressorError(f"target.backend {backend} cannot run here: {reason}")
        self.reference = self.runner(reference, "reference")
        self.reference_ms = statistics.median(interleaved({"reference": self.reference}, warmup, iters)["reference"])

    def runner(self, model: nn.Module, name: str) -> Callable[[], None]:
        candidate = Candidate(name, model=clone(model))
        if self.backend.needs in ("onnx", "engine"):
            candidate.onnx = self.settings.workdir / f"{name}.onnx"
            # TorchScript export: several times faster than dynamo, and each trial exports once.
            ox.export(clone(model), self.input_shape, candidate.onnx, dynamo=False)
        return self.backend.runner(candidate, self.batch, self.input_shape, self.settings)

    def measure(self, model: nn.Module) -> dict:
        times = interleaved({"reference": self.reference, "candidate": self.runner(model, "candidate")},
                            self.warmup, self.iters)
        return {"latency_ms": statistics.median(times["candidate"]),
                "reference_ms": statistics.median(times["reference"]),
                "speedup": paired_speedup(times["reference"], times["candidate"])}

    def close(self) -> None:
        self.folder.cleanup()


def _next_fraction(points: list[tuple[float, float]], goal: float) -> float:
    """The MACs fraction expected to meet `goal`, interpolated through the measured (fraction,
    value) points closest to it on either side (or extrapolated from the two lowest)."""
    above = sorted((p for p in points if p[1] > goal), key=lambda p: p[1])
    below = sorted((p for p in points if p[1] <= goal), key=lambda p: -p[1])
    pair = [above[0], below[0]] if below else above[:2]
    if len(pair) < 2 or pair[0][1] == pair[1][1]:
        fraction, value = above[0]
        guess = fraction * goal / value  # as if latency were proportional to MACs
    else:
        (f1, v1), (f2, v2) = pair
        guess = f1 + (goal - v1) * (f2 - f1) / (v2 - v1)
    return min(max(guess, 0.01), 0.999)


class RatioSearch:
    """Every step removes the same share of channels, so that `steps` of them remove `ratio`."""

    def __init__(self, plan: Plan, ratio: float, steps: int):
        self.plan, self.ratio = plan, step_share(ratio, steps)

    def trial(self, model: nn.Module, example: torch.Tensor, survey: Survey, step: int, share: float) -> Trial:
        return prune_copy(model, example, self.plan, self.ratio, survey)

    def metrics(self) -> dict:
        return {}

    def close(self) -> None: ...


class BudgetSearch:
    """Lands each step on its share of a MACs or parameter budget: after `share` of the steps,
    `start · fraction^share` of the starting count is left."""

    def __init__(self, plan: Plan, key: str, start: int, fraction: float):
        self.plan, self.key, self.start, self.fraction = plan, key, start, fraction

    def trial(self, model: nn.Module, example: torch.Tensor, survey: Survey, step: int, share: float) -> Trial:
        return bisect(model, example, self.plan, survey, self.key, self.start * self.fraction ** share)

    def metrics(self) -> dict:
        return {}

    def close(self) -> None: ...


class LatencySearch:
    """Lands each step on its share of a latency goal measured by `probe`: `key` is
    'latency_ms', or 'relative' (1 / speedup over the probe's reference). After `share` of the
    steps the goal is `start · fraction^share`, `start` being what the unpruned model measures.

    Each step prunes copies to MACs fractions predicted from the latencies measured so far,
    until one measures at the goal or up to `tolerance` below it, and keeps the least-pruned
    copy that met it. Measurements on a shared machine are noisy, so the search keeps a
    bracket: it never again asks for as many MACs as a copy that missed the goal, nor as few as
    one that met it."""

    def __init__(self, plan: Plan, probe: LatencyProbe, key: str, start: float, fraction: float, tolerance: float,
                 max_trials: int, log: Callable[[int, int, dict], None]):
        self.plan, self.probe, self.key = plan, probe, key
        self.start, self.fraction, self.tolerance, self.max_trials, self.log = start, fraction, tolerance, max_trials, log
        self.current = start  # what the model the next step starts from measures
        self.trials: list[dict] = []
        self.reached: dict | None = None

    def trial(self, model: nn.Module, example: torch.Tensor, survey: Survey, step: int, share: float) -> Trial:
        goal = self.start * self.fraction ** share
        macs, params = count_macs_params(model, example)
        if self.current <= goal:
            self.reached = None
            return Trial(0.0, clone(model), [], macs, params)
        best = self._search(model, example, survey, step, goal, macs)
        self.current, self.reached = best.measured[self.key], best.measured
        return best

    def _search(self, model, example, survey: Survey, step: int, goal: float, macs: int) -> Trial:
        aim = goal * (1 - self.tolerance / 2)  # the middle of the accepted band
        points, best, missed = [(1.0, self.current)], None, 1.0  # missed: the fewest MACs that missed the goal
        for _ in range(self.max_trials):
            met_at = best.macs / macs if best else 0.0
            fraction = min(max(_next_fraction(points, aim), met_at * 1.01), missed * 0.97)
            if fraction <= met_at:
                break  # the bracket has closed
            trial = self._pruned_to(model, example, survey, fraction * macs)
            kept = trial.macs / macs
            if kept <= met_at or kept >= missed:
                break  # MACs come in steps (round_to, heads): no untried model lies inside the bracket
            measured, met = self._measure(trial, kept, goal, step)
            points.append((kept, measured[self.key]))
            if met:
                best, trial.measured = trial, measured
                if measured[self.key] >= goal * (1 - self.tolerance):
                    break
            elif trial.ratio >= self.plan.max_ratio:
                break  # nothing more to remove
            else:
                missed = kept
        if best is None:
            raise CompressorError(
                f"latency target not met: after {len(points) - 1} measured trials the best is "
                f"{min(v for _, v in points):.3g} against {goal:.3g} ({self.key}); raise max_ratio_per_layer, "
                "un-ignore layers, or ask for less")
        return best

    def _pruned_to(self, model, example, survey: Survey, macs: float) -> Trial:
        try:
            return bisect(model, example, self.plan, survey, "macs", macs)
        except OutOfReach:  # asked for more than the layer limits allow: try the most they allow
            return prune_copy(model, example, self.plan, self.plan.max_ratio, survey)

    def _measure(self, trial: Trial, kept: float, goal: float, step: int) -> tuple[dict, bool]:
        measured = self.probe.measure(trial.model)
        measured["relative"] = 1 / measured["speedup"]
        met = measured[self.key] <= goal
        row = {"ratio": round(trial.ratio, 4), "macs_kept": kept, **measured, "goal": goal, "met": met}
        self.trials.append({"step": step, **row})
        self.log(step, sum(t["step"] == step for t in self.trials), row)
        return measured, met

    def metrics(self) -> dict:
        return {"latency_trials": self.trials, "latency_reached": self.reached} if self.trials else {}

    def close(self) -> None:
        self.probe.close()
