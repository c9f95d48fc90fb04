"""N:M semi-structured pruning by magnitude. The masks go into State.masks, so every later
pass that trains keeps them exactly and every checkpoint stores them."""

from typing import Literal

from compressor.passes import Pass, register_pass
from compressor.sparsity.apply import apply_masks, show_layers, sparsity_metrics
from compressor.sparsity.nm import nm_mask
from compressor.sparsity.selection import NMParams, select_layers, weight_key


class SemiStructuredParams(NMParams):
    type: Literal["semi_structured"] = "semi_structured"


@register_pass
class SemiStructured(Pass):
    """N:M (2:4 by default) magnitude masks on Linear/Conv2d weights, kept by every later training pass."""

    Params = SemiStructuredParams
    snapshots_teacher = True

    @classmethod
    def leaves_masks(cls, params) -> bool:
        return True

    def run(self, state, ctx) -> dict:
        p = self.params
        state.snapshot_teacher(ctx.previous)
        layers, skipped = select_layers(state.model, p)
        masks = {}
        for name, module in layers.items():
            key = weight_key(name)
            mask = nm_mask(module.weight, *p.nm)
            # A mask from an earlier pass stays in force: its zeros are zeros of the new one too.
            masks[key] = mask * state.masks[key].to(mask) if key in state.masks else mask
        rows = apply_masks(state, layers, masks)
        show_layers(p.pattern, rows, skipped)
        return sparsity_metrics(state.model, p.pattern, rows, skipped)
