from typing import Literal

from compressor.passes import Pass, register_pass
from compressor.schema import PassParams
from compressor.training import evaluate


class EvaluateParams(PassParams):
    type: Literal["evaluate"] = "evaluate"


@register_pass
class Evaluate(Pass):
    """Top-1, top-5 and loss of the model as it stands, on the evaluation split."""

    Params = EvaluateParams

    def run(self, state, ctx) -> dict:
        return evaluate(state.model, ctx.data.eval, ctx.device)
