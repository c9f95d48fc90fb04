"""Distillation recovery: the student trains against a frozen teacher (by default the model
before the first pruning pass) with logit losses (kd, dkd, optionally standardised) and
feature losses (cwd, mse/fitnet) on paired layers, in the one training loop."""

import inspect
from typing import ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from compressor.console import console
from compressor.distill.adapters import add_adapters, kept_channels, save_adapters
from compressor.distill.losses import FEATURE_LOSSES, LOGIT_LOSSES
from compressor.distill.pairing import Pair, pair_layers
from compressor.distill.terms import FeatureTerm, LogitTerm, Schedule, Teacher
from compressor.errors import CompressorError
from compressor.models import load_source
from compressor.passes import PASSES, Pass, register_pass
from compressor.schema import ModelSpec, PassParams, Strict
from compressor.registry import Registry
from compressor.training import TrainParams, fit

ADAPTERS_FILE = "adapters.safetensors"


class LossSpec(Strict):
    """A loss picked by name, its weight schedule, and the options its function takes."""

    registry: ClassVar[Registry]
    OPTIONS: ClassVar[tuple[str, ...]]

    loss: str
    weight: float = Field(1.0, ge=0, description="multiplier of this loss")
    warmup: float = Field(0.0, ge=0, description="epochs over which the weight ramps up linearly from 0")

    @field_validator("loss")
    @classmethod
    def known(cls, name: str) -> str:
        try:
            cls.registry.get(name)
        except CompressorError as e:
            raise PydanticCustomError("unknown_loss", str(e)) from None
        return name

    @model_validator(mode="after")
    def options_fit_loss(self):
        stray = [k for k in self.OPTIONS if k in self.model_fields_set and k not in self.accepted()]
        if stray:
            own = [k for k in self.OPTIONS if k in self.accepted()]
            raise PydanticCustomError("loss_options", f"loss '{self.loss}' takes no {' or '.join(stray)} "
                                      f"(its options: {', '.join(own) or 'none'})")
        return self

    def function(self):
        return self.registry.get(self.loss)

    def accepted(self) -> set[str]:
        return set(inspect.signature(self.function()).parameters)

    def options(self) -> dict:
        return {k: getattr(self, k) for k in self.OPTIONS if k in self.accepted()}

    def schedule(self, epochs: float) -> Schedule:
        return Schedule(self.weight, self.warmup, epochs)


class LogitSpec(LossSpec):
    registry = LOGIT_LOSSES
    OPTIONS = ("temperature", "alpha", "beta")

    loss: str = Field("kd", description=" | ".join(LOGIT_LOSSES.names()))
    temperature: float = Field(4.0, gt=0, description="softmax temperature T")
    standardize: bool = Field(False, description="z-score both logits before the softmax (Sun et al. 2024)")
    alpha: float = Field(1.0, ge=0, description="dkd: weight of the target-vs-rest term (TCKD)")
    beta: float = Field(8.0, ge=0, description="dkd: weight of the among-non-targets term (NCKD)")


class LayerPair(Strict):
    student: str = Field(description="module name in the student, e.g. layer2")
    teacher: str = Field(description="module name in the teacher")


class FeatureSpec(LossSpec):
    registry = FEATURE_LOSSES
    OPTIONS = ("temperature",)

    loss: str = Field("cwd", description=" | ".join(FEATURE_LOSSES.names()))
    temperature: float = Field(1.0, gt=0, description="cwd: temperature τ of the per-channel spatial softmax")
    layers: Literal["auto"] | list[LayerPair] = Field(
        "auto", description="auto (same-named blocks) or [{student: NAME, teacher: NAME}, …]")

    @field_validator("layers", mode="before")
    @classmethod
    def auto_or_pairs(cls, value):
        # Checked before the union, whose own error would name the branch it failed, not the fix.
        pairs = isinstance(value, list) and all(isinstance(x, dict) and set(x) == {"student", "teacher"} for x in value)
        if value != "auto" and not pairs:
            raise PydanticCustomError("layers", "layers is auto or a list of {student: NAME, teacher: NAME}")
        return value


class DistillParams(PassParams, TrainParams):
    type: Literal["distill"] = "distill"
    teacher: ModelSpec | None = Field(
        None, description="{source, checkpoint, kwargs}; default: the model before the first prune pass")
    ce_weight: float = Field(1.0, ge=0, description="weight of the task's own loss on the labels (cross-entropy; "
                                                    "a detector's box, class and DFL losses)")
    logit: LogitSpec | None = Field(default_factory=LogitSpec, description="logit loss; null for none")
    features: FeatureSpec | None = Field(None, description="feature loss on paired layers; null for none")

    @model_validator(mode="after")
    def something_to_distill(self):
        if self.logit is None and self.features is None:
            raise PydanticCustomError("nothing_to_distill", "give logit or features (or both); "
                                      "without either this is plain training: type: train")
        return self


NO_TEACHER = ("distill has no teacher to learn from: no prune or semi_structured pass before it kept a snapshot, and "
              "nothing before it trained, so the recipe's model would distil from itself; give teacher: {source, "
              "checkpoint}, or put distill after prune")


def changed_before(before) -> bool:
    """Whether a pass before distill changed the model, so the snapshot it kept, or else the
    recipe's model, is a teacher distinct from the student."""
    return any(PASSES.get(p.type).trains or PASSES.get(p.type).snapshots_teacher for p in before)


def load_teacher(state, ctx, spec: ModelSpec | None) -> tuple[nn.Module, str, bool]:
    """The teacher, a line saying where it came from, and whether it is the unpruned source
    model (then the pruning history tells which of its channels the student kept)."""
    if spec is not None:
        teacher, record = load_source(spec, ctx.trust)
        return teacher, f"{spec.source} from {spec.checkpoint or 'no checkpoint (untrained)'}", record == state.source
    if state.teacher is not None:
        return state.teacher, f"snapshot before the first prune (after {state.teacher_pass})", True
    if not changed_before(ctx.recipe.passes[:ctx.index]):
        raise CompressorError(NO_TEACHER)
    return ctx.baseline(), "the recipe's model (no prune pass before distill took a snapshot)", True


def check_logits(student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> None:
    with torch.no_grad():
        s, t = student.eval()(example), teacher.eval()(example)
    if s.shape != t.shape:
        raise CompressorError(f"logit: the teacher outputs shape {tuple(t.shape[1:])} per sample and the student "
                              f"{tuple(s.shape[1:])}; give a teacher with the same classes, or logit: null")


def feature_pairs(state, teacher: nn.Module, spec: FeatureSpec, example: torch.Tensor, is_source: bool,
                  task) -> tuple[list[Pair], str | None]:
    """The layer pairs, narrowed ones with an adapter, and how those adapters were initialised.
    `auto` pairs the layers the task names (a detector's head inputs), else same-named blocks."""
    if spec.layers == "auto":
        named = task.feature_layers(state.model)
        layers = [(n, n) for n in named] if named else "auto"
    else:
        layers = [(x.student, x.teacher) for x in spec.layers]
    pairs = pair_layers(state.model, teacher, example, layers)
    narrowed = {x.teacher: x.teacher_channels for x in pairs if x.student_channels != x.teacher_channels}
    if not narrowed:
        return pairs, None
    kept = kept_channels(teacher, state.pruning_history, state.input_shape, narrowed) if is_source else None
    add_adapters(pairs, kept)
    return pairs, "kept-channel selection" if kept is not None else "default"


@register_pass
class Distill(Pass):
    """Recovery by distillation from the unpruned model: kd/dkd on logits, cwd/mse on features."""

    Params = DistillParams
    trains = True

    @classmethod
    def order_problem(cls, params, before) -> str | None:
        return NO_TEACHER if params.teacher is None and not changed_before(before) else None

    def run(self, state, ctx) -> dict:
        p = self.params
        state.model.to(ctx.device)
        teacher, origin, is_source = load_teacher(state, ctx, p.teacher)
        teacher.to(ctx.device)
        pairs, adapter_init, terms = distillation_terms(state, ctx, p, teacher, is_source)
        console.print(f"  teacher: {origin}")
        for x in pairs:
            via = f", adapter {x.student_channels}→{x.teacher_channels}" if x.adapter is not None else ""
            console.print(f"  {p.features.loss}: student {x.student} ← teacher {x.teacher}{via}")
        metrics = fit(state, ctx, p, terms, desc="distill", task_weight=p.ce_weight)
        save_adapters(pairs, ctx.pass_dir / ADAPTERS_FILE)
        return {"teacher": origin, "adapter_init": adapter_init,
                "pairs": [{"student": x.student, "teacher": x.teacher, "adapter": x.adapter is not None} for x in pairs],
                **metrics}


def distillation_terms(state, ctx, p, teacher, is_source: bool) -> tuple[list, str | None, list]:
    """The teacher's forward, KD on its logits and the feature loss on its maps, as `p` (a distill or
    qat pass's parameters) asks: (feature pairs, how adapters began, terms for the training loop)."""
    example = state.example_input(device=ctx.device)
    if p.logit:
        why_not = ctx.task.logit_distillation()
        if why_not:
            raise CompressorError(f"logit: {why_not}")
        check_logits(state.model, teacher, example)
    pairs, adapter_init = (feature_pairs(state, teacher, p.features, example, is_source, ctx.task) if p.features
                           else ([], None))
    tutor = Teacher(teacher, [x.teacher for x in pairs])
    terms = [tutor]
    if p.logit:
        terms.append(LogitTerm(tutor, p.logit.loss, p.logit.function(), p.logit.options(), p.logit.standardize,
                               p.logit.schedule(p.epochs)))
    if p.features:
        terms.append(FeatureTerm(tutor, p.features.loss, p.features.function(), p.features.options(), pairs,
                                 p.features.schedule(p.epochs)))
    return pairs, adapter_init, terms
