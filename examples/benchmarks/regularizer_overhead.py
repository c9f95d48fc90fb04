"""What a sparsity regulariser costs per training step: plain steps and regularised steps of
the Fashion-MNIST ResNet-20 timed interleaved in one process (the ratio survives a busy machine).

    python examples/benchmarks/regularizer_overhead.py [--batch 128] [--threads 2]
"""

import argparse
import copy

import torch
import torch.nn.functional as F

from compressor.models import build_model
from compressor.runtime.latency import interleaved, paired_speedup, speedup_iqr
from compressor.sparsity.regularizers import BatchNormL1, GroupNormRegularizer
from compressor.training import Step


def stepper(model: torch.nn.Module, term, x: torch.Tensor, y: torch.Tensor):
    """One training step of `model` with `term` applied where the training loop applies it."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if term is not None:
        term.attach(model)

    def run():
        optimizer.zero_grad(set_to_none=True)
        outputs = model(x)
        loss = F.cross_entropy(outputs, y)
        extra = term.loss(Step(x, y, outputs, 0, 0.5)) if term is not None else None
        (loss + extra if extra is not None else loss).backward()
        if term is not None:
            term.before_step(model, Step(x, y, outputs, 0, 0.5))
        optimizer.step()
        if term is not None:
            term.after_step(model)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("zoo:resnet20", {"in_channels": 1, "width": 16, "num_classes": 10})
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    example = x[:1]
    terms = {"plain": None, "bn_l1": BatchNormL1(1e-4), "group_norm": GroupNormRegularizer(1e-4, "constant", example)}
    runners = {name: stepper(copy.deepcopy(model), term, x, y) for name, term in terms.items()}
    times = interleaved(runners, warmup=3, iters=args.iters, min_timed_s=10)
    print(f"training step, resnet20 width 16, batch {args.batch}, {args.threads} CPU threads, SGD")
    print("| regulariser | step ms (median) | cost vs plain (quartiles over rounds) |\n|---|---:|---:|")
    for name in terms:
        cost = paired_speedup(times[name], times["plain"]) - 1
        q1, q3 = speedup_iqr(times[name], times["plain"])
        ms = sorted(times[name])[len(times[name]) // 2]
        print(f"| {name} | {ms:.1f} | {cost:+.1%} ({q1 - 1:+.1%} … {q3 - 1:+.1%}) |")


if __name__ == "__main__":
    main()
