from compressor.passes import Pass, register_pass
from compressor.recipe import PassParams
from compressor.training import evaluate


class EvaluateParams(PassParams):
    pass


@register_pass("evaluate")
class Evaluate(Pass):
    """Top-1, top-5 and loss of the model as it stands, on the evaluation split."""

    Params = EvaluateParams

    def run(self, state, ctx):
        ctx.metrics.update(evaluate(state.model, ctx.data.eval, ctx.device))
        return state
