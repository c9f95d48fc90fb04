"""What sparsity regularisers and distillation add to a training step, measured: steps of the
Fashion-MNIST ResNet-20 with and without each term, timed interleaved in one process so the
ratios survive a busy machine. Regularisers run on the unpruned model (sparse_train comes before
prune); distillation on a pruned student with the unpruned model as its teacher. The bound for
distillation is the teacher's forward pass as loaded (eval mode, no_grad), run on every step.

    python examples/benchmarks/train_step_cost.py [--batch 128] [--threads 2]
"""

import argparse
import copy

import torch
import torch.nn.functional as F

from compressor.distill.adapters import add_adapters
from compressor.distill.losses import FEATURE_LOSSES, LOGIT_LOSSES
from compressor.distill.pairing import pair_layers
from compressor.distill.terms import FeatureTerm, LogitTerm, Schedule, Teacher
from compressor.measure import count_macs_params, human
from compressor.models import build_model
from compressor.passes.prune import PruneParams, prune_to
from compressor.process import keep_freed_memory
from compressor.runtime.latency import interleaved, paired_speedup, speedup_iqr
from compressor.sparsity.regularizers import BatchNormL1, GroupNormRegularizer
from compressor.training import Step, Term


def stepper(model: torch.nn.Module, terms: list, x: torch.Tensor, y: torch.Tensor):
    """One SGD step of `model` with `terms` applied where the training loop applies them."""
    model.train()
    for term in terms:
        term.attach(model)
    extra = [p for t in terms for p in t.parameters()]
    optimizer = torch.optim.SGD(list(model.parameters()) + extra, lr=0.01, momentum=0.9)

    def run():
        optimizer.zero_grad(set_to_none=True)
        outputs = model(x)
        step = Step(x, y, outputs, 0, 0.5)
        losses = [F.cross_entropy(outputs, y)] + [t.loss(step) for t in terms]
        sum(v for v in losses if v is not None).backward()
        for term in terms:
            term.before_step(model, step)
        optimizer.step()
        for term in terms:
            term.after_step(model)

    return run


def distill_terms(student, teacher, example, layers: str | list | None) -> list:
    """kd, and cwd on `layers` (as in a recipe) unless None."""
    pairs = pair_layers(student, teacher, example, layers) if layers else []
    tutor = Teacher(teacher, [p.teacher for p in pairs])
    terms = [tutor, LogitTerm(tutor, "kd", LOGIT_LOSSES.get("kd"), {"temperature": 4.0}, False, Schedule(1, 0, 1))]
    if layers:
        add_adapters(pairs, None)
        terms.append(FeatureTerm(tutor, "cwd", FEATURE_LOSSES.get("cwd"), {"temperature": 1.0}, pairs,
                                 Schedule(1, 0, 1)))
    return terms


class TeacherForwardOnly(Teacher):
    """The teacher run on every step as distillation runs it, its output unused."""

    def loss(self, step):
        self.outputs(step)


class TeacherAsLoaded(Term):
    """The teacher's forward pass as a user would run it, on every step, output unused: the bound."""

    def __init__(self, model):
        self.model = model.eval()

    def loss(self, step):
        with torch.no_grad():
            self.model(step.inputs)


def main() -> None:
    keep_freed_memory()  # as the compress command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seconds", type=float, default=20, help="time for at least this long")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = build_model("zoo:resnet20", {"in_channels": 1, "width": 16, "num_classes": 10}).eval()
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    example = x[:1]
    student = copy.deepcopy(teacher)
    prune_to(student, example, PruneParams(type="prune", round_to=8), 0.3)
    tmacs, smacs = count_macs_params(teacher, example)[0], count_macs_params(student, example)[0]

    def teacher_forward():
        with torch.no_grad():
            teacher(x)

    def distilled(layers):
        model = copy.deepcopy(student)
        return stepper(model, distill_terms(model, teacher, example, layers), x, y)

    runners = {
        "unpruned: CE": stepper(copy.deepcopy(teacher), [], x, y),
        "unpruned: CE + bn_l1": stepper(copy.deepcopy(teacher), [BatchNormL1(1e-4)], x, y),
        "unpruned: CE + group_norm": stepper(copy.deepcopy(teacher), [GroupNormRegularizer(1e-4, "constant", example)],
                                             x, y),
        "student: CE": stepper(copy.deepcopy(student), [], x, y),
        "student: CE + teacher forward as loaded (the bound)": stepper(copy.deepcopy(student),
                                                                        [TeacherAsLoaded(teacher)], x, y),
        "student: CE + teacher forward as distill runs it": stepper(copy.deepcopy(student),
                                                                    [TeacherForwardOnly(teacher, [])], x, y),
        "student: CE + kd": distilled(None),
        "student: CE + kd + cwd, last stage": distilled([("layer3", "layer3")]),
        "student: CE + kd + cwd, every stage (auto)": distilled("auto"),
        "teacher forward alone, as loaded": teacher_forward,
    }
    times = interleaved(runners, warmup=3, iters=10, min_timed_s=args.seconds)
    print(f"resnet20 width 16 (teacher {human(tmacs)} MACs, student {human(smacs)}), batch {args.batch}, "
          f"{args.threads} CPU threads, SGD; cost = median over rounds of (step ÷ plain CE step) − 1")
    print("| step | median ms | img/s | cost vs plain CE step (quartiles) |\n|---|---:|---:|---:|")
    for name, ms in times.items():
        base = "unpruned: CE" if name.startswith("unpruned") else "student: CE"
        cost = paired_speedup(ms, times[base]) - 1
        q1, q3 = speedup_iqr(ms, times[base])
        median = sorted(ms)[len(ms) // 2]
        print(f"| {name} | {median:.1f} | {args.batch / median * 1e3:.0f} | "
              f"{cost:+.1%} ({q1 - 1:+.1%} … {q3 - 1:+.1%}) |")
    bound = times["student: CE + teacher forward as loaded (the bound)"]
    print("\nA distillation step against a step with the bound, paired round by round:")
    for name in [n for n in times if " kd" in n]:
        ratio, (q1, q3) = paired_speedup(times[name], bound), speedup_iqr(times[name], bound)
        verdict = "within" if ratio <= 1 else "over"
        print(f"  {name.removeprefix('student: CE + ')}: {ratio:.3f}× its time (quartiles {q1:.3f}–{q3:.3f}), "
              f"{verdict} the bound")


if __name__ == "__main__":
    main()
