from typing import Literal

from compressor.passes import Pass, register_pass
from compressor.schema import PassParams
from compressor.training import TrainParams, fit


class TrainPassParams(PassParams, TrainParams):
    type: Literal["train"] = "train"


@register_pass
class Train(Pass):
    """Dense training or fine-tuning with cross-entropy (masks from earlier passes are kept)."""

    Params = TrainPassParams
    trains = True

    def run(self, state, ctx) -> dict:
        return fit(state, ctx, self.params, desc="train")
