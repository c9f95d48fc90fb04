"""torchrun support: one process per GPU (or CPU worker), gradients all-reduced by DDP.
Outside torchrun every function here is a cheap no-op, so single-process code is unchanged."""

import hashlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> None:
    if launched() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(minutes=60))


def shutdown() -> None:
    if active():
        dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def sum_across(values: list[float], device: torch.device) -> list[float]:
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """For parameters DDP does not own (e.g. distillation adapters)."""
    if not active():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world())


def sync_buffers(model: torch.nn.Module) -> None:
    """BatchNorm statistics are updated locally after DDP's last broadcast: take rank 0's."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def weights_identical(model: torch.nn.Module) -> bool:
    """True when every rank holds bit-identical weights: DDP should guarantee it, this proves it."""
    if not active():
        return True
    digest = hashlib.sha256()
    for v in model.state_dict().values():
        digest.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    mine = digest.hexdigest()
    everyone = [None] * world()
    dist.all_gather_object(everyone, mine)
    return len(set(everyone)) == 1
