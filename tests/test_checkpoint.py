"""A pruned model comes back from its checkpoint (source + pruning history + safetensors)."""

import copy

import pytest
import torch

from compressor.models import build_model
from compressor.passes.prune import PruneParams, prune_to
from compressor.state import State, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("source, kwargs, shape", [
    ("zoo:resnet20", {"in_channels": 1, "num_classes": 10}, (1, 28, 28)),
    ("torchvision:resnet18", {"num_classes": 10}, (3, 64, 64)),
])
def test_pruned_checkpoint_round_trip(tmp_path, source, kwargs, shape):
    torch.manual_seed(0)
    model = build_model(source, kwargs).eval()
    example = torch.randn(1, *shape)
    history = []
    for ratio in (0.3, 0.3):  # two pruning steps: each is replayed on the result of the one before
        history.append(prune_to(model, example, PruneParams(type="prune", ratio=ratio), ratio))
    with torch.no_grad():  # make BN statistics non-trivial so a lost buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    mask_name = next(n for n, p in model.named_parameters() if p.ndim == 4)
    masks = {mask_name: (torch.rand_like(dict(model.named_parameters())[mask_name]) > 0.5).float()}
    state = State(model, {"source": source, "kwargs": kwargs}, shape, history, masks)
    save_checkpoint(state, tmp_path, {"index": 0})

    loaded = load_checkpoint(tmp_path)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.pruning_history == history
    assert torch.equal(loaded.masks[mask_name], masks[mask_name])
    assert sum(p.numel() for p in loaded.model.parameters()) < sum(
        p.numel() for p in build_model(source, kwargs).parameters())


def test_checkpoint_is_written_last_by_state_json(tmp_path):
    """state.json marks a complete checkpoint: it must not exist before the weights do."""
    model = build_model("zoo:mlp", {"hidden": 16})
    save_checkpoint(State(model, {"source": "zoo:mlp", "kwargs": {"hidden": 16}}, (1, 28, 28)), tmp_path, {})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["model.safetensors", "state.json"]
    assert (tmp_path / "state.json").stat().st_mtime_ns >= (tmp_path / "model.safetensors").stat().st_mtime_ns
    reloaded = load_checkpoint(tmp_path).model
    for (_, a), (_, b) in zip(model.state_dict().items(), copy.deepcopy(reloaded).state_dict().items()):
        assert torch.equal(a, b)
