"""Quantisation-aware training with distillation: the one training loop with the scheme's fake
quant on exactly the layers the following quantize pass makes INT8, and the distill pass's
teacher and losses (kd on logits, optionally cwd on features) pulling the rounded model back
to its float self, or to the unpruned model. The model stays a float model; the quantize pass
after it writes the Q/DQ ONNX."""

import copy
from typing import Literal

from pydantic import Field

from compressor.console import console
from compressor.errors import CompressorError
from compressor.passes import Pass, register_pass
from compressor.passes.distill import FeatureSpec, LogitSpec, distillation_terms, load_teacher
from compressor.passes.quantize import QuantizeParams, show_plan
from compressor.quantization.calibration import calibration_batches
from compressor.quantization.fake_quant import FakeQuant
from compressor.quantization.plan import int8_layers, plan_layers
from compressor.quantization.scheme import SCHEMES
from compressor.schema import ModelSpec, PassParams
from compressor.training import TrainParams, fit


class QatParams(PassParams, TrainParams):
    type: Literal["qat"] = "qat"
    lr: float = Field(0.002, gt=0, description="peak learning rate (a fine-tune of a trained model: keep it small)")
    teacher: ModelSpec | None = Field(None, description="{source, checkpoint, kwargs}; default: see teacher_from")
    teacher_from: Literal["float", "unpruned"] = Field(
        "float", description="without teacher: float (the model as it enters qat) | unpruned (the model before the "
                             "first prune pass)")
    ce_weight: float = Field(1.0, ge=0, description="weight of the task's own loss on the labels")
    logit: LogitSpec | None = Field(default_factory=LogitSpec, description="logit loss; null for none")
    features: FeatureSpec | None = Field(None, description="feature loss on paired layers; null for none")


def following_quantize(ctx) -> QuantizeParams:
    """The quantize pass after this one: QAT trains for the scheme and layers it will use."""
    later = [p for p in ctx.recipe.passes[ctx.index + 1:] if p.type == "quantize"]
    if not later:
        raise CompressorError("qat fine-tunes for the Q/DQ ONNX that a quantize pass writes, and no quantize pass "
                              "follows it: add '- type: quantize' after qat")
    return later[0]


def pick_teacher(state, ctx, p: QatParams):
    if p.teacher is not None or p.teacher_from == "unpruned":
        if p.teacher is None and state.teacher is None:
            raise CompressorError("teacher_from: unpruned needs a prune or semi_structured pass before qat; "
                                  "use teacher_from: float")
        return load_teacher(state, ctx, p.teacher)
    teacher = copy.deepcopy(state.model).eval().requires_grad_(False)
    return teacher, "the float model as it entered qat", False


@register_pass
class Qat(Pass):
    """Fake-quant fine-tuning for INT8 with distillation (kd, optionally cwd), in the one training loop."""

    Params = QatParams
    trains = True

    def run(self, state, ctx) -> dict:
        p, quant = self.params, following_quantize(ctx)
        scheme = SCHEMES[quant.target]
        batches = calibration_batches(ctx.data.train, quant.calibration_batches, state.input_shape)
        rows = plan_layers(state.model.cpu().eval(), quant.keep_float, quant.keep_float_error, quant.error_samples,
                           batches, scheme)
        show_plan(rows)
        teacher, origin, is_source = pick_teacher(state, ctx, p)
        state.model.to(ctx.device)
        teacher.to(ctx.device)
        _, _, terms = distillation_terms(state, ctx, p, teacher, is_source)
        terms.append(FakeQuant(int8_layers(rows), scheme))
        console.print(f"  teacher: {origin}; fake quant ({scheme.activations} activations) on "
                      f"{len(int8_layers(rows))}/{len(rows)} layers")
        metrics = fit(state, ctx, p, terms, desc="qat", task_weight=p.ce_weight)
        return {"teacher": origin, "target": quant.target, "fake_quant_layers": int8_layers(rows), **metrics}
