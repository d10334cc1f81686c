"""Listwise distillation: KL between teacher and student softmax over each user's list."""

from __future__ import annotations

import torch

from ._checks import (
    check_dims,
    check_finite,
    check_mask,
    check_same_shape,
    check_temperature,
    check_tensor,
)


def listwise_kl_loss(
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over users.

    Labels: ``teacher_scores[b, l]`` is the teacher's score (a logit: any real number) for the
    l-th candidate of user b; the student is pushed to reproduce the teacher's distribution over
    the list, not its absolute scores. The T^2 factor (Hinton et al. 2015) keeps gradient sizes
    comparable across temperatures. Rows with no valid entry are left out of the mean.

    Args:
        student_scores: [B, L] student scores for the same candidates in the same order.
        teacher_scores: [B, L] teacher scores, finite.
        temperature: T > 0.
        mask: [B, L] bool, True = real candidate, False = padding (ignored on both sides).
    """
    student = check_tensor(student_scores, "student_scores")
    teacher = check_tensor(teacher_scores, "teacher_scores")
    check_dims(student, "student_scores", (2,), "[B, L]")
    check_same_shape(student, teacher, "student_scores", "teacher_scores")
    t = check_temperature(temperature)
    check_finite(teacher, "teacher_scores", "drop or re-score these rows in the soft-label dataset")
    check_finite(student, "student_scores", "the student produced NaN/inf; check training")
    valid = (
        torch.ones_like(student, dtype=torch.bool)
        if mask is None
        else check_mask(mask, student.shape, "mask")
    )
    rows = valid.any(dim=1)
    if not rows.any():
        raise ValueError("mask: every entry is False; at least one candidate must be valid")
    neg_inf = float("-inf")
    log_p_t = torch.log_softmax((teacher / t).masked_fill(~valid, neg_inf), dim=1)
    log_p_s = torch.log_softmax((student / t).masked_fill(~valid, neg_inf), dim=1)
    terms = torch.where(valid, log_p_t.exp() * (log_p_t - log_p_s), torch.zeros_like(student))
    return t * t * terms.sum(dim=1)[rows].mean()
