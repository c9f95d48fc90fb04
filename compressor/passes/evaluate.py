from typing import Literal

from compressor.passes import Pass, register_pass
from compressor.schema import PassParams


class EvaluateParams(PassParams):
    type: Literal["evaluate"] = "evaluate"


@register_pass
class Evaluate(Pass):
    """The task's metrics of the model as it stands, on the evaluation split: top-1, top-5 and loss
    for a classifier, mAP50, mAP50-95, precision and recall for a detector."""

    Params = EvaluateParams

    def run(self, state, ctx) -> dict:
        return ctx.task.evaluate(state.model, ctx.data.eval, ctx.device)
