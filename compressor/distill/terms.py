"""The terms that plug distillation into the one training loop. The teacher is a term too, so
the loop's attach/detach bracket its hooks; it runs once per step, on the student's batch,
whichever loss asks first."""

import collections
import copy
from typing import Callable

import torch
import torch.fx
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from compressor.distill.losses import standardize
from compressor.distill.pairing import Pair
from compressor.training import Step, Term


def tap(model: nn.Module, names: list[str], store: dict[str, torch.Tensor]) -> list:
    """Forward hooks that keep the latest output of each named module in `store`."""
    modules = dict(model.named_modules())

    def keep(name):
        def hook(module, inputs, output):
            store[name] = output
        return hook

    return [modules[name].register_forward_hook(keep(name)) for name in dict.fromkeys(names)]


class Schedule:
    """A loss weight that ramps linearly from 0 over the first `warmup` epochs (DKD's warm-up)."""

    def __init__(self, weight: float, warmup: float, epochs: float):
        self.weight, self.warmup, self.epochs = weight, warmup, epochs

    def __call__(self, step: Step) -> float:
        if self.warmup <= 0:
            return self.weight
        return self.weight * min(1.0, step.progress * self.epochs / self.warmup)


def fold_batchnorm(model: nn.Module, tapped: list[str]) -> nn.Module:
    """A copy of a frozen model with each BatchNorm that directly follows a conv folded into that
    conv's weights: the same function with one pass over every feature map fewer, so a faster
    teacher (see docs/measurements.md). The folded BatchNorm becomes an Identity, so every module
    keeps its name and its output for the hooks; a `tapped` conv keeps its own output and is not
    folded, nor is a conv called more than once (each call may be followed by another BatchNorm).
    A model torch.fx cannot trace is returned as it is."""
    model = copy.deepcopy(model).eval()
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # data-dependent control flow: run it unfolded
        return model
    modules = dict(model.named_modules())
    calls = collections.Counter(node.target for node in graph.nodes if node.op == "call_module")

    def replace(name: str, module: nn.Module) -> None:
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent] if parent else model, attr, module)

    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(modules.get(node.target), nn.BatchNorm2d) and isinstance(source, torch.fx.Node)
                and source.op == "call_module" and isinstance(modules.get(source.target), nn.Conv2d)
                and len(source.users) == 1 and calls[source.target] == 1 and source.target not in tapped):
            replace(source.target, fuse_conv_bn_eval(modules[source.target], modules[node.target]))
            replace(node.target, nn.Identity())
    return model


class Teacher(Term):
    """The frozen teacher, run in eval mode under no_grad on the same batch as the student, with
    its BatchNorms folded into its convs and, on the CPU, its weights channels-last: oneDNN then
    keeps every map in that layout instead of reordering it at each conv, which made the
    teacher's forward faster (see docs/measurements.md). On CUDA that layout is unmeasured, so
    there the teacher stays as it is."""

    name = "teacher"

    def __init__(self, model: nn.Module, layers: list[str]):
        self.model, self.layers = fold_batchnorm(model, layers), layers
        self.features: dict[str, torch.Tensor] = {}
        self.hooks: list = []
        self.step: Step | None = None
        self.logits: torch.Tensor | None = None

    def attach(self, model: nn.Module) -> None:
        device = next(model.parameters()).device
        self.model.to(device).eval().requires_grad_(False)
        if device.type == "cpu":  # Conv2d only: a Conv3d's 5-D weight cannot take this layout
            for conv in (m for m in self.model.modules() if isinstance(m, nn.Conv2d)):
                conv.to(memory_format=torch.channels_last)
        self.hooks = tap(self.model, self.layers, self.features)

    def detach(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks, self.step, self.logits = [], None, None
        self.features.clear()

    def outputs(self, step: Step) -> torch.Tensor:
        """The teacher's logits for this step; its tapped features land in `self.features`."""
        if step is not self.step:
            with torch.no_grad():
                self.logits = self.model(step.inputs)
            self.step = step
        return self.logits


class LogitTerm(Term):
    def __init__(self, teacher: Teacher, name: str, loss: Callable, options: dict, standardized: bool,
                 schedule: Schedule):
        self.teacher, self.name, self.fn, self.options = teacher, name, loss, options
        self.standardized, self.schedule = standardized, schedule

    def loss(self, step: Step) -> torch.Tensor:
        student, teacher = step.outputs.float(), self.teacher.outputs(step).float()
        if self.standardized:
            student, teacher = standardize(student), standardize(teacher)
        return self.schedule(step) * self.fn(student, teacher, step.targets, **self.options)


class FeatureTerm(Term):
    """One loss over all layer pairs (their mean); each pair's own value goes into the metrics."""

    def __init__(self, teacher: Teacher, name: str, loss: Callable, options: dict, pairs: list[Pair],
                 schedule: Schedule):
        self.teacher, self.name, self.fn, self.options = teacher, name, loss, options
        self.pairs, self.schedule = pairs, schedule
        self.features: dict[str, torch.Tensor] = {}
        self.hooks: list = []
        self.sums = [0.0] * len(pairs)
        self.steps = 0

    def adapters(self) -> list[nn.Module]:
        return [p.adapter for p in self.pairs if p.adapter is not None]

    def attach(self, model: nn.Module) -> None:
        device = next(model.parameters()).device
        for adapter in self.adapters():
            adapter.to(device).train()
        self.hooks = tap(model, [p.student for p in self.pairs], self.features)

    def detach(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []
        self.features.clear()

    def parameters(self) -> list[nn.Parameter]:
        return [p for adapter in self.adapters() for p in adapter.parameters()]

    def loss(self, step: Step) -> torch.Tensor:
        self.teacher.outputs(step)
        values = []
        for pair in self.pairs:
            student = self.features[pair.student].float()
            if pair.adapter is not None:
                student = pair.adapter(student)
            values.append(self.fn(student, self.teacher.features[pair.teacher].float(), **self.options))
        values = torch.stack(values)
        for i, v in enumerate(values.detach().cpu().tolist()):
            self.sums[i] += v
        self.steps += 1
        return self.schedule(step) * values.mean()

    def end_epoch(self, model: nn.Module, epoch: int) -> dict:
        means = {f"{self.name}_{p.student}": s / max(self.steps, 1) for p, s in zip(self.pairs, self.sums)}
        self.sums, self.steps = [0.0] * len(self.pairs), 0
        return means
