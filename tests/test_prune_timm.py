"""timm's classifiers pruned at ratio 0.5 (whole heads in the transformers), each at the smallest
input it takes: each prunes, rebuilds from its pruning history, exports to ONNX and agrees with
onnxruntime, outright or once the layers the first error names are ignored. The sweep is slow;
docs/pruning.md holds its table (examples/prune_zoo_sweep.py --zoo timm). The structures behind
the issue's failures are tested on small models of our own in tests/test_prune.py."""

import re

import pytest
import torch

from compressor.models import build_model
from compressor.passes.prune import PruneParams, prune_to
from compressor.pruning.attention import attention_heads
from compressor.pruning.engine import replay
from compressor.pruning.sweep import TIMM_MODELS, check

pytest.importorskip("timm")

# Models that prune once the layers the first error names are ignored, and what that error says.
NEEDS_IGNORE = {
    "timm:efficientformer_l1": r"add 'stages\.3\.blocks\.4\.token_mixer\.qkv' to ignore .*the reshape at "
                               r"timm/models/efficientformer\.py:\d+ `qkv = qkv\.reshape",
    "timm:edgenext_xx_small": r"add 'stages\.1\.blocks\.1\.mlp\.fc2' to ignore .*the chunk at timm/models/edgenext\.py",
    "timm:poolformer_s12": r"add all 4 to ignore: .*timm/models/metaformer\.py:\d+ `return x \* self\.scale\.view",
}
# Models where torch-pruning leaves some groups whole, as the cut would empty a layer: channels
# paired through a cat (GhostNet), the conv of one chunk, XCA's per-head temperature (EdgeNeXt).
LEFT_WHOLE = {"timm:ghostnet_100", "timm:edgenext_xx_small"}


def assert_row(row: dict) -> None:
    name = row["model"]
    assert row["ok"], row.get("error")
    assert bool(row["ignore"]) == (name in NEEDS_IGNORE), row.get("error")
    if name in NEEDS_IGNORE:
        assert re.search(NEEDS_IGNORE[name], row["error"]) and "\n" not in row["error"], row["error"]
    assert bool(row["skipped"]) == (name in LEFT_WHOLE), row["skipped"]
    transformer = row["heads_before"] > 0
    most = 0.7 if row["ignore"] or row["skipped"] else 0.6 if transformer else 0.35  # channels ×0.5: MACs ≈ ×0.25
    assert row["macs_kept"] < most
    if transformer:
        assert row["heads_after"] <= row["heads_before"] // 2 + 12  # at least one head stays in each block


# The models with a special case in the tables above, and the two transformer families; the plain
# convnets behave as torchvision's do (tests/test_prune_zoo.py). CI's time is bounded:
# examples/prune_zoo_sweep.py --zoo timm checks every model in TIMM_MODELS.
SPECIAL = sorted({*NEEDS_IGNORE, *LEFT_WHOLE, "timm:vit_tiny_patch16_224", "timm:swin_tiny_patch4_window7_224"})


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECIAL)
def test_timm_sweep(tmp_path, name):
    assert_row(check(name, TIMM_MODELS[name], 0.5, tmp_path))


def test_timm_swin_loses_heads_with_their_bias_columns_and_replays():
    source = ("timm:swin_tiny_patch4_window7_224", {"img_size": 32, "window_size": 4, "embed_dim": 32,
                                                    "depths": (2, 2), "num_heads": (2, 4), "num_classes": 10})
    torch.manual_seed(0)
    model, original = build_model(*source).eval(), build_model(*source).eval()
    original.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    history = prune_to(model, x[:1], PruneParams(type="prune", ratio=0.5), 0.5)
    assert list(attention_heads(model).values()) == [1, 1, 2, 2]
    blocks = [m for m in model.modules() if type(m).__name__ == "WindowAttention"]
    assert all(b.relative_position_bias_table.shape[1] == b.num_heads for b in blocks)
    assert blocks[0].qkv.in_features == 32  # the embedding width stays
    replay(original, [history], (3, 32, 32)).load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(original(x), model(x))
