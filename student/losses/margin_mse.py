"""Margin-MSE distillation (Hofstätter et al. 2020): match the teacher's score margins."""

from __future__ import annotations

import torch

from ._checks import check_dims, check_finite, check_mask, check_same_shape, check_tensor


def margin_mse_loss(
    student_pos: torch.Tensor,
    student_neg: torch.Tensor,
    teacher_pos: torch.Tensor,
    teacher_neg: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of ``((s_pos - s_neg) - (t_pos - t_neg))^2`` over valid (user, negative) pairs;
    with ``weight`` the weighted mean ``sum(w * sq) / sum(w)`` over them.

    Labels: the teacher's margin ``t_pos - t_neg`` between a user's positive and negative item.
    Only differences are matched, so teacher and student may have different offsets but must
    be on a comparable scale (standardise teacher scores, or tune the student's scale).

    Args:
        student_pos: [B] student scores of the positives.
        student_neg: [B] or [B, N] student scores of the negatives.
        teacher_pos: [B] teacher scores of the same positives.
        teacher_neg: same shape as ``student_neg``.
        mask: same shape as ``student_neg``, True = valid pair.
        weight: same shape as ``student_neg``, finite and >= 0 (e.g. ``pair_importance``);
            None = every pair counts the same (exactly the plain mean).
    """
    s_pos = check_tensor(student_pos, "student_pos")
    s_neg = check_tensor(student_neg, "student_neg")
    t_pos = check_tensor(teacher_pos, "teacher_pos")
    t_neg = check_tensor(teacher_neg, "teacher_neg")
    check_dims(s_pos, "student_pos", (1,), "[B]")
    check_dims(s_neg, "student_neg", (1, 2), "[B] or [B, N]")
    check_same_shape(s_pos, t_pos, "student_pos", "teacher_pos")
    check_same_shape(s_neg, t_neg, "student_neg", "teacher_neg")
    if s_neg.shape[0] != s_pos.shape[0]:
        raise ValueError(
            f"student_neg: {s_neg.shape[0]} rows but student_pos has {s_pos.shape[0]}; give "
            "one row of negatives per positive"
        )
    fix_t = "drop or re-score these rows in the soft-label dataset"
    check_finite(t_pos, "teacher_pos", fix_t)
    check_finite(t_neg, "teacher_neg", fix_t)
    fix_s = "the student produced NaN/inf; check training"
    check_finite(s_pos, "student_pos", fix_s)
    check_finite(s_neg, "student_neg", fix_s)
    if s_neg.dim() == 2:
        s_pos, t_pos = s_pos.unsqueeze(1), t_pos.unsqueeze(1)
    sq = ((s_pos - s_neg) - (t_pos - t_neg)) ** 2
    if weight is not None:
        return _weighted(sq, weight, mask)
    if mask is None:
        return sq.mean()
    valid = check_mask(mask, sq.shape, "mask")
    if not valid.any():
        raise ValueError("mask: no valid pair; at least one entry must be True")
    return sq[valid].mean()


def _weighted(sq: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    w = check_tensor(weight, "weight")
    check_same_shape(sq, w, "student_neg", "weight")
    check_finite(w, "weight", "give finite pair weights")
    if (w < 0).any():
        raise ValueError("weight: pair weights must be >= 0")
    if mask is not None:
        w = w * check_mask(mask, sq.shape, "mask").to(w.dtype)
    total = w.sum()
    if total <= 0:
        raise ValueError("weight/mask: no valid pair has a positive weight")
    return (w * sq).sum() / total
