"""The optimisation settings shared by every pass that trains."""

from typing import Literal

from pydantic import Field

from compressor.schema import Strict


class TrainParams(Strict):
    epochs: float = Field(1, ge=0, description="passes over the training set (fractions allowed)")
    lr: float = Field(0.05, gt=0, description="peak learning rate")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    scheduler: Literal["cosine", "step", "constant"] = "cosine"
    step_every: float = Field(30, gt=0, description="epochs between x0.1 steps (scheduler: step)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
