"""Sparsity-aware training: the one training loop with a sparsity term plugged in, so that
what a later pruning step removes has already faded (bn_l1, group_norm), or so that the
N:M masks are learnt rather than imposed (nm, SR-STE)."""

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from compressor.console import console
from compressor.errors import CompressorError
from compressor.passes import Pass, register_pass
from compressor.sparsity.apply import apply_masks, show_layers, sparsity_metrics
from compressor.sparsity.monitor import ScaleMonitor
from compressor.sparsity.regularizers import BatchNormL1, GroupNormRegularizer, batchnorm_scales
from compressor.sparsity.selection import NMParams, select_layers
from compressor.sparsity.srste import SRSTE
from compressor.training import TrainParams, fit

DEFAULT_STRENGTH = {"bn_l1": 1e-4, "group_norm": 1e-4, "nm": 2e-4}
NM_ONLY = set(NMParams.model_fields) - {"type"}
SCALES_ONLY = {"report_below"}
HISTOGRAM = "bn_scales.png"


class SparseTrainParams(TrainParams, NMParams):
    method: Literal["bn_l1", "group_norm", "nm"] = Field(
        "bn_l1", description="bn_l1: L1 on BatchNorm scales (Network Slimming) | group_norm: DepGraph group "
                             "regulariser | nm: N:M masks learnt by SR-STE")
    strength: float | None = Field(
        None, ge=0, description="regulariser weight; default 1e-4 (bn_l1, group_norm) or 2e-4 (nm: λ_w on "
                                "pruned weights); 0 trains with no regulariser")
    schedule: Literal["constant", "decay"] = Field(
        "constant", description="decay: strength·(1 − 0.9·epoch/epochs)")
    report_below: list[float] = Field(
        [1e-3, 1e-2, 1e-1], min_length=1, description="bn_l1/group_norm: log the share of |γ| under each")

    @model_validator(mode="after")
    def options_fit_method(self):
        foreign = SCALES_ONLY if self.method == "nm" else NM_ONLY
        stray = sorted(foreign & self.model_fields_set)
        if stray:
            raise PydanticCustomError("option_of_other_method", f"method {self.method} takes no {' or '.join(stray)}")
        return self

    @property
    def regularizer_strength(self) -> float:
        return DEFAULT_STRENGTH[self.method] if self.strength is None else self.strength


def regularizer(p: SparseTrainParams, state, ctx):
    """The term that makes channels fade, or None when strength is 0 (then it costs nothing)."""
    strength = p.regularizer_strength
    if strength == 0:
        return None
    if p.method == "bn_l1":
        return BatchNormL1(strength, p.schedule)
    return GroupNormRegularizer(strength, p.schedule, state.example_input(device=ctx.device))


@register_pass("sparse_train")
class SparseTrain(Pass):
    """Sparsity-aware training: BN-L1 slimming, group-norm regularisation or SR-STE N:M masks."""

    Params = SparseTrainParams
    trains = True

    def run(self, state, ctx):
        p = self.params
        ctx.metrics.update(method=p.method, strength=p.regularizer_strength, schedule=p.schedule)
        if p.method == "nm":
            return self.learn_masks(state, ctx)
        if p.method == "bn_l1" and not batchnorm_scales(state.model):
            raise CompressorError("method bn_l1 slims BatchNorm scales, and this model has no BatchNorm; "
                                  "use method: group_norm")
        term = regularizer(p, state, ctx)
        monitor = ScaleMonitor(p.report_below, ctx.pass_dir / HISTOGRAM)
        ctx.metrics.update(fit(state, ctx, p, [t for t in (term, monitor) if t], desc=f"sparse_train {p.method}"))
        if monitor.history:
            last = monitor.history[-1]
            note = (f"BatchNorm scales after {p.method}: "
                    + ", ".join(f"{share:.1%} below {t}" for t, share in last["below"].items())
                    + f" (median {last['median']:.3g}; histogram {HISTOGRAM})")
            ctx.metrics.update(bn_scales=monitor.history, histogram=HISTOGRAM, note=note)
            console.print(f"  {note}")
        return state

    def learn_masks(self, state, ctx):
        p = self.params
        state.snapshot_teacher(ctx.previous)
        layers, skipped = select_layers(state.model, p, already=state.masks)
        term = SRSTE(layers, *p.nm, p.regularizer_strength, p.schedule)
        ctx.metrics.update(fit(state, ctx, p, [term], desc=f"sparse_train nm {p.pattern}"))
        rows = apply_masks(state, layers, term.masks)
        ctx.metrics.update(sparsity_metrics(state.model, p.pattern, rows, skipped))
        show_layers(p.pattern, rows, skipped)
        return state
