"""Distillation losses, composed by name from two registries. Each is a plain function of
tensors, so a test can hold it against the paper's formula. Logit losses share the signature
(student, teacher, targets, **options); feature losses (student, teacher, **options)."""

import torch
import torch.nn.functional as F

from compressor.registry import Registry

LOGIT_LOSSES: Registry = Registry("logit loss")
FEATURE_LOSSES: Registry = Registry("feature loss")


def standardize(logits: torch.Tensor) -> torch.Tensor:
    """Logit standardisation (Sun et al., CVPR 2024): z-scores each sample's logits, so the
    student is asked to match the teacher's logit relations, not its logit range."""
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)
    return (logits - mean) / (std + 1e-7)


def _kl(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) summed over the last dimension, averaged over the rest."""
    per_row = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return per_row.mean()


@LOGIT_LOSSES.register("kd")
def kd(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al. (2015): KL between softened distributions, × T² so its gradient keeps
    the same scale whatever the temperature. The targets are not used."""
    return _kl((student / temperature).log_softmax(1), (teacher / temperature).log_softmax(1)) * temperature**2


def _target_vs_rest(logits: torch.Tensor, is_target: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the binary split (target class, all others), via logsumexp for stability."""
    total = logits.logsumexp(1)
    target = logits[is_target] - total
    rest = logits.masked_fill(is_target, float("-inf")).logsumexp(1) - total
    return torch.stack([target, rest], 1)


@LOGIT_LOSSES.register("dkd")
def dkd(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float = 4.0,
        alpha: float = 1.0, beta: float = 8.0) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): α·TCKD (target vs rest) + β·NCKD (among the
    non-target classes), both at temperature T and × T²."""
    s, t = student / temperature, teacher / temperature
    is_target = F.one_hot(targets, s.shape[1]).bool()
    tckd = _kl(_target_vs_rest(s, is_target), _target_vs_rest(t, is_target))
    others = s.shape[1] - 1
    nckd = _kl(s[~is_target].view(-1, others).log_softmax(1), t[~is_target].view(-1, others).log_softmax(1))
    return (alpha * tckd + beta * nckd) * temperature**2


class _SpatialKL(torch.autograd.Function):
    """CWD's sum of KL(teacher ‖ student) over spatial softmaxes, with its gradient written out:
    ∂/∂student = (softmax(s/τ) − softmax(t/τ)) / τ. Autograd's own graph of the same formula makes
    a dozen map-sized temporaries where this makes four, and is slower for it (see
    docs/measurements.md). The teacher gets no gradient: it is a frozen target."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        s, t = student.flatten(2), teacher.flatten(2)
        if temperature != 1:
            s, t = s / temperature, t / temperature
        s_log, t_log = s.log_softmax(2), t.log_softmax(2)
        t_prob = t_log.exp()
        flat = t_prob.reshape(-1)  # dot products reduce without writing a product map
        total = torch.dot(flat, t_log.reshape(-1)) - torch.dot(flat, s_log.reshape(-1))
        ctx.save_for_backward(s_log, t_prob)
        ctx.temperature, ctx.shape = temperature, student.shape
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s_log, t_prob = ctx.saved_tensors
        return s_log.exp().sub_(t_prob).mul_(grad / ctx.temperature).view(ctx.shape), None, None


@FEATURE_LOSSES.register("cwd")
def cwd(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Channel-wise distillation (Shu et al., ICCV 2021): each channel becomes a distribution
    over spatial positions (softmax at temperature τ); KL teacher → student, × τ², / (N·C)."""
    n, c = student.shape[:2]
    return _SpatialKL.apply(student, teacher.detach(), temperature) * (temperature**2 / (n * c))


@FEATURE_LOSSES.register("mse")
@FEATURE_LOSSES.register("fitnet")
def mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Layer-wise hint loss (FitNets, Romero et al. 2015): mean squared error of the maps."""
    return F.mse_loss(student, teacher)
