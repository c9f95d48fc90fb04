"""Tensors a forward leaves in module attributes (caches such as timm's attention-bias cache,
filled by a forward in eval mode). Filled by a forward with autograd on, such a cache holds a
tensor with autograd history, which copy.deepcopy refuses; filled from the weights before
pruning, it goes stale once they are cut; and a trace that finds it filled does not see the
weights it was computed from, so two traces of one model would disagree."""

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

_OWN = ("_parameters", "_buffers", "_modules")  # what nn.Module itself keeps (and deepcopy handles)


def _held(module: nn.Module) -> Iterator[tuple[dict, object, torch.Tensor]]:
    """(container, key, tensor) for each tensor `module` keeps outside its parameters, buffers
    and submodules: as a plain attribute, or as an entry of a dict attribute (how caches are kept)."""
    for name, value in list(vars(module).items()):
        if name in _OWN:
            continue
        if isinstance(value, torch.Tensor):
            yield vars(module), name, value
        elif isinstance(value, dict):
            yield from ((value, key, item) for key, item in list(value.items()) if isinstance(item, torch.Tensor))


def drop_autograd_history(model: nn.Module) -> None:
    """Rids `model`'s attributes of the tensors with autograd history that a forward left there
    (this project's forwards leave none, but count_macs_params and a user's may). A cache entry is
    deleted, so the module computes it again from its weights; a plain attribute, which the module
    may read back, keeps its value without the history."""
    for module in model.modules():
        for container, key, tensor in list(_held(module)):
            if tensor.grad_fn is None:
                continue
            if container is vars(module):
                container[key] = tensor.detach()
            else:
                del container[key]


@contextlib.contextmanager
def leaving_no_tensors(model: nn.Module) -> Iterator[None]:
    """While the block runs `model`, its modules may keep tensors in their attributes; afterwards
    each attribute and cache entry holds what it held before, and those the block added are gone."""
    before = {(id(container), key): tensor for m in model.modules() for container, key, tensor in _held(m)}
    try:
        yield
    finally:
        for module in model.modules():
            for container, key, tensor in list(_held(module)):
                old = before.get((id(container), key))
                if old is None:
                    del container[key]
                elif old is not tensor:
                    container[key] = old
