"""Importance weights of a teacher's ranked pairs (after DLLM2Rec's importance-aware ranking
distillation): trust a pair more near the top of the teacher's list, when the teacher is sure
of it, and when the student, trained on the ground truth too, already agrees."""

from __future__ import annotations

import math

import torch

from ._checks import check_dims, check_finite, check_mask, check_same_shape, check_tensor


def pair_importance(
    student_first: torch.Tensor,
    student_second: torch.Tensor,
    teacher_first: torch.Tensor,
    teacher_second: torch.Tensor,
    mask: torch.Tensor | None = None,
    lam: float = 10.0,
    agree_boost: float = 1.0,
) -> torch.Tensor:
    """Weights [B, N] of the pairs (first item of row b, its n-th second item), where the
    teacher ranks the first item above the second ones, which come in the teacher's rank order
    (column n is the teacher's rank n + 1 below the first). Computed without gradient:

        position[b,n]    = exp(-n / lam)                      (DLLM2Rec: position-aware)
        confidence[b,n]  = sigmoid(t_first[b] - t_second[b,n]) (how sure the teacher is)
        agree[b,n]       = 1 + agree_boost * [s_first[b] > s_second[b,n]]  (consistency-aware)
        w~ = position * confidence * agree * valid;   w = w~ / mean(w~ over the valid pairs)

    so the weights average 1 over the batch's valid pairs (a weighted mean keeps the loss's
    scale). Direction: a pair deeper in the teacher's list, one with a smaller teacher margin,
    or one the student orders the other way gets less weight than it would otherwise. The
    paper adds its three weights (gamma_p w_p + gamma_c w_c + gamma_o w_o); here they
    multiply, as in ``rank_distill_loss``, and the confidence is the teacher's pairwise margin
    (the paper's is a distance between the LLM's generated text and the item).

    Args:
        student_first: [B] student scores of each row's first (teacher-preferred) item.
        student_second: [B, N] student scores of the second items, teacher rank order.
        teacher_first: [B] teacher logits of the first items.
        teacher_second: [B, N] teacher logits of the second items.
        mask: [B, N] bool, True = a real pair (default all).
        lam: position decay > 0 (larger = flatter over the list).
        agree_boost: >= 0, extra weight of a pair the student already orders as the teacher.
    """
    s1, s2 = (
        check_tensor(student_first, "student_first"),
        check_tensor(student_second, "student_second"),
    )
    t1, t2 = (
        check_tensor(teacher_first, "teacher_first"),
        check_tensor(teacher_second, "teacher_second"),
    )
    check_dims(s1, "student_first", (1,), "[B]")
    check_dims(s2, "student_second", (2,), "[B, N]")
    check_same_shape(s1, t1, "student_first", "teacher_first")
    check_same_shape(s2, t2, "student_second", "teacher_second")
    if s2.shape[0] != s1.shape[0]:
        raise ValueError(
            f"student_second: {s2.shape[0]} rows but student_first has {s1.shape[0]}; give "
            "one row of second items per first item"
        )
    for x, name in ((t1, "teacher_first"), (t2, "teacher_second")):
        check_finite(x, name, "drop or re-score these rows in the soft-label dataset")
    for v, name, strict in ((lam, "lam", True), (agree_boost, "agree_boost", False)):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < 0 or (strict and v == 0):
            raise ValueError(f"{name}={v!r}: expected a finite float {'>' if strict else '>='} 0")
    valid = (
        torch.ones_like(s2, dtype=torch.bool)
        if mask is None
        else check_mask(mask, s2.shape, "mask")
    )
    with torch.no_grad():
        n = torch.arange(s2.shape[1], dtype=s2.dtype, device=s2.device)
        position = torch.exp(-n / lam).expand_as(s2)
        confidence = torch.sigmoid(t1.unsqueeze(1) - t2).to(s2.dtype)
        agree = 1.0 + agree_boost * (s1.unsqueeze(1) > s2).to(s2.dtype)
        w = position * confidence * agree * valid.to(s2.dtype)
        total = w.sum()
        if total <= 0:
            raise ValueError("mask: no valid pair; at least one entry must be True")
        return w * (valid.sum() / total)
