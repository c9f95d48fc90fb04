"""Sparsity-aware training: the one training loop with a sparsity term plugged in, so that
what a later pruning step removes has already faded (bn_l1, group_norm), or so that the
N:M masks are learnt rather than imposed (nm, SR-STE)."""

from typing import Literal

from pydantic import Field

from compressor.console import console
from compressor.errors import CompressorError
from compressor.passes import Pass, register_pass
from compressor.schema import PassParams, Variant, tagged
from compressor.sparsity.apply import apply_masks, show_layers, sparsity_metrics
from compressor.sparsity.monitor import ScaleMonitor
from compressor.sparsity.regularizers import BatchNormL1, GroupNormRegularizer, batchnorm_scales
from compressor.sparsity.selection import NMParams, select_layers
from compressor.sparsity.srste import SRSTE
from compressor.training import TrainParams, fit

HISTOGRAM = "bn_scales.png"


class SparseTrainBase(PassParams, TrainParams, Variant):
    type: Literal["sparse_train"] = "sparse_train"
    schedule: Literal["constant", "decay"] = Field(
        "constant", description="decay: strength·(1 − 0.9·epoch/epochs)")


class ScaleSparsityParams(SparseTrainBase):
    method: Literal["bn_l1", "group_norm"] = Field(
        "bn_l1", description="bn_l1: L1 on BatchNorm scales (Network Slimming) | group_norm: DepGraph group "
                             "regulariser")
    strength: float = Field(1e-4, ge=0, description="regulariser weight; 0 trains with no regulariser")
    report_below: list[float] = Field(
        [1e-3, 1e-2, 1e-1], min_length=1, description="log the share of |γ| under each")


class NMSparsityParams(SparseTrainBase, NMParams):
    method: Literal["nm"] = Field(description="nm: N:M masks learnt by SR-STE")
    strength: float = Field(2e-4, ge=0, description="λ_w, the decay of the pruned weights; 0 for none")


SparseTrainParams = tagged({"bn_l1": ScaleSparsityParams, "group_norm": ScaleSparsityParams, "nm": NMSparsityParams},
                           key="method", default="bn_l1")


def regularizer(p: ScaleSparsityParams, state, ctx):
    """The term that makes channels fade, or None when strength is 0 (then it costs nothing)."""
    if p.strength == 0:
        return None
    if p.method == "bn_l1":
        return BatchNormL1(p.strength, p.schedule)
    return GroupNormRegularizer(p.strength, p.schedule, state.example_input(device=ctx.device))


@register_pass
class SparseTrain(Pass):
    """Sparsity-aware training: BN-L1 slimming, group-norm regularisation or SR-STE N:M masks."""

    Params = SparseTrainParams
    trains = True

    @classmethod
    def leaves_masks(cls, params) -> bool:
        return params.method == "nm"

    def run(self, state, ctx) -> dict:
        p = self.params
        metrics = {"method": p.method, "strength": p.strength, "schedule": p.schedule}
        if p.method == "nm":
            return {**metrics, **self.learn_masks(state, ctx)}
        if p.method == "bn_l1" and not batchnorm_scales(state.model):
            raise CompressorError("method bn_l1 slims BatchNorm scales, and this model has no BatchNorm; "
                                  "use method: group_norm")
        term = regularizer(p, state, ctx)
        monitor = ScaleMonitor(p.report_below, ctx.pass_dir / HISTOGRAM)
        metrics.update(fit(state, ctx, p, [t for t in (term, monitor) if t], desc=f"sparse_train {p.method}"))
        if monitor.history:
            last = monitor.history[-1]
            note = (f"BatchNorm scales after {p.method}: "
                    + ", ".join(f"{share:.1%} below {t}" for t, share in last["below"].items())
                    + f" (median {last['median']:.3g}; histogram {HISTOGRAM})")
            metrics.update(bn_scales=monitor.history, histogram=HISTOGRAM, note=note)
            console.print(f"  {note}")
        return metrics

    def learn_masks(self, state, ctx) -> dict:
        p = self.params
        state.snapshot_teacher(ctx.previous)
        layers, skipped = select_layers(state.model, p, already=state.masks)
        term = SRSTE(layers, *p.nm, p.strength, p.schedule)
        metrics = fit(state, ctx, p, [term], desc=f"sparse_train nm {p.pattern}")
        rows = apply_masks(state, layers, term.masks)
        show_layers(p.pattern, rows, skipped)
        return {**metrics, **sparsity_metrics(state.model, p.pattern, rows, skipped)}
