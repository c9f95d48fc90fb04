"""Each distillation loss against a direct, loop-by-loop reading of its paper's formula."""

import math

import pytest
import torch

from compressor.distill.losses import FEATURE_LOSSES, LOGIT_LOSSES, cwd, dkd, kd, mse, standardize
from compressor.distill.terms import Schedule
from compressor.errors import CompressorError
from compressor.training import Step


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def logits(seed: int, n: int = 5, classes: int = 7) -> torch.Tensor:
    return torch.randn(n, classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def direct_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> float:
    rows = [kl(softmax([v / temperature for v in tr]), softmax([v / temperature for v in sr]))
            for sr, tr in zip(s.tolist(), t.tolist())]
    return temperature**2 * sum(rows) / len(rows)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_is_hintons_kl_times_t_squared(temperature):
    s, t = logits(0), logits(1)
    assert kd(s, t, None, temperature=temperature).item() == pytest.approx(direct_kd(s, t, temperature), rel=1e-9)
    assert kd(t, t, None, temperature=temperature).item() == pytest.approx(0.0, abs=1e-12)


def test_standardized_kd_z_scores_both_logits():
    s, t = logits(2), logits(3)
    z = [[(v - sum(r) / len(r)) / math.sqrt(sum((v - sum(r) / len(r)) ** 2 for v in r) / (len(r) - 1)) for v in r]
         for r in t.tolist()]
    torch.testing.assert_close(standardize(t), torch.tensor(z, dtype=torch.float64))
    got = kd(standardize(s), standardize(t), None, temperature=2.0).item()
    assert got == pytest.approx(direct_kd(standardize(s), torch.tensor(z), 2.0), rel=1e-6)
    # The point of standardisation: the teacher's logit scale and shift no longer matter.
    assert kd(standardize(s), standardize(5 * t + 3), None, temperature=2.0).item() == pytest.approx(got, rel=1e-6)
    assert kd(s, 5 * t + 3, None, temperature=2.0).item() != pytest.approx(kd(s, t, None, temperature=2.0).item(), rel=1e-3)


def direct_dkd(s, t, targets, temperature, alpha, beta) -> float:
    total = 0.0
    for sr, tr, y in zip(s.tolist(), t.tolist(), targets.tolist()):
        ps, pt = softmax([v / temperature for v in sr]), softmax([v / temperature for v in tr])
        tckd = kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        others_s = softmax([v / temperature for i, v in enumerate(sr) if i != y])
        others_t = softmax([v / temperature for i, v in enumerate(tr) if i != y])
        total += alpha * tckd + beta * kl(others_t, others_s)
    return temperature**2 * total / len(targets)


def test_dkd_is_alpha_tckd_plus_beta_nckd():
    s, t = logits(4), logits(5)
    targets = torch.tensor([0, 3, 6, 2, 3])
    got = dkd(s, t, targets, temperature=4.0, alpha=1.0, beta=8.0).item()
    assert got == pytest.approx(direct_dkd(s, t, targets, 4.0, 1.0, 8.0), rel=1e-9)


def test_dkd_recomposes_kd():
    """Zhao et al.'s identity: KD = TCKD + (1 - p_target of the teacher) · NCKD, per sample."""
    s, t = logits(6, n=1), logits(7, n=1)
    target = torch.tensor([2])
    teacher_rest = 1 - torch.softmax(t / 3.0, 1)[0, 2].item()
    recomposed = dkd(s, t, target, temperature=3.0, alpha=1.0, beta=teacher_rest).item()
    assert recomposed == pytest.approx(kd(s, t, target, temperature=3.0).item(), rel=1e-9)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_is_spatial_softmax_kl_per_channel(tau):
    g = torch.Generator().manual_seed(8)
    s, t = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    total = sum(kl(softmax([v / tau for v in t[n, c].flatten().tolist()]),
                   softmax([v / tau for v in s[n, c].flatten().tolist()])) for n in range(2) for c in range(3))
    assert cwd(s, t, temperature=tau).item() == pytest.approx(tau**2 * total / (2 * 3), rel=1e-9)
    assert cwd(t, t, temperature=tau).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_cwd_hand_written_gradient_matches_the_numerical_one(tau):
    """cwd writes its gradient by hand for speed; torch's numerical gradient must agree with it."""
    g = torch.Generator().manual_seed(10)
    s = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: cwd(x, t, temperature=tau), (s,))
    cwd(s, t, temperature=tau).backward()
    assert s.grad.abs().max() > 1e-3  # a real gradient, not an empty one


def test_mse_and_fitnet_are_the_hint_loss():
    g = torch.Generator().manual_seed(9)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    assert mse(s, t).item() == pytest.approx(((s - t) ** 2).sum().item() / s.numel(), rel=1e-6)
    assert FEATURE_LOSSES.get("fitnet") is FEATURE_LOSSES.get("mse")


def test_loss_names_come_from_registries():
    assert LOGIT_LOSSES.names() == ["dkd", "kd"] and FEATURE_LOSSES.names() == ["cwd", "fitnet", "mse"]
    with pytest.raises(CompressorError, match="did you mean 'cwd'"):
        FEATURE_LOSSES.get("cdw")


def test_weight_warms_up_linearly_over_epochs():
    ramp = Schedule(weight=2.0, warmup=1.0, epochs=4.0)
    at = lambda progress: ramp(Step(None, None, None, 0, progress))  # noqa: E731
    assert [at(0.0), at(0.125), at(0.25), at(0.9)] == [0.0, 1.0, 2.0, 2.0]
    assert Schedule(weight=0.5, warmup=0.0, epochs=4.0)(Step(None, None, None, 0, 0.0)) == 0.5
