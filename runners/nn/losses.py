"""Knowledge-distillation losses (pure torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """`alpha·CE(y, s) + (1-alpha)·T²·KL(softmax(t/T) || softmax(s/T))`.

    T² keeps the soft-target gradients on the same scale as the hard-label ones whatever T is
    (Hinton et al. 2015). `labels` may be None only when alpha is 0.
    """
    import torch.nn.functional as F

    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (temperature**2)
    if alpha == 0:
        return soft
    assert labels is not None, "the hard-label term needs labels"
    hard = F.cross_entropy(student, labels)
    if alpha == 1:
        return hard
    return alpha * hard + (1 - alpha) * soft


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine between student and teacher embeddings, averaged over the batch."""
    import torch.nn.functional as F

    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
