"""The one example input: what graphs are traced with, MACs counted on and exports made from.
It is seeded and drawn from its own generator, so building one never moves the global random
stream that training draws from."""

import torch


def example_input(input_shape, batch: int = 1, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *tuple(input_shape), generator=g).to(device)
