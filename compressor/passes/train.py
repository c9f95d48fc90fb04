from compressor.passes import Pass, register_pass
from compressor.training import TrainParams, fit


@register_pass("train")
class Train(Pass):
    """Dense training or fine-tuning with cross-entropy (masks from earlier passes are kept)."""

    Params = TrainParams
    trains = True

    def run(self, state, ctx):
        ctx.metrics.update(fit(state, ctx, self.params, desc="train"))
        return state
