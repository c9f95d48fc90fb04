from typing import Literal

from pydantic import Field

from compressor.errors import CompressorError
from compressor.passes import Pass, register_pass
from compressor.schema import PassParams


class EvaluateParams(PassParams):
    type: Literal["evaluate"] = "evaluate"
    split: Literal["test", "val"] = Field("test", description="test: the split results are reported on; val: the "
                                                             "validation split choices are made on (data.val_split)")


@register_pass
class Evaluate(Pass):
    """The task's metrics of the model as it stands, on the evaluation split: top-1, top-5 and loss
    for a classifier, mAP50, mAP50-95, precision and recall for a detector. `split: val` measures
    the validation split instead, its metrics prefixed `val_`."""

    Params = EvaluateParams

    def run(self, state, ctx) -> dict:
        if self.params.split == "test":
            return {**ctx.task.evaluate(state.model, ctx.data.eval, ctx.device), "split": "test"}
        if ctx.data.val is None:
            raise CompressorError("evaluate split: val needs a validation split, and this data has none; set "
                                  "data.val_split (e.g. 5000) or evaluate split: test")
        metrics = ctx.task.evaluate(state.model, ctx.data.val, ctx.device, desc="evaluate val")
        # Named apart, so that no report, stage or headline takes them for the reported split's numbers.
        return {**{f"val_{key}": value for key, value in metrics.items()}, "split": "val"}
