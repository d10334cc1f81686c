"""Pointwise distillation: binary cross-entropy against the teacher's soft probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_dims, check_finite, check_mask, check_same_shape, check_tensor


def soft_bce_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean of ``BCEWithLogits(student_logits, teacher_probs)`` over valid entries.

    Labels: ``teacher_probs[b, l]`` in [0, 1] is the teacher's probability that user b likes
    candidate l (e.g. P("Yes") of an LLM judge, or a calibrated sigmoid of a teacher score);
    hard 0/1 labels are the special case. With soft targets the minimum is the entropy of the
    targets, not 0.

    Args:
        student_logits: [B, L] student scores used as logits.
        teacher_probs: [B, L] probabilities in [0, 1].
        mask: [B, L] bool, True = valid entry, False = padding.
        weight: [B, L] or [B] non-negative weights (e.g. teacher confidence); default 1.
    """
    logits = check_tensor(student_logits, "student_logits")
    probs = check_tensor(teacher_probs, "teacher_probs")
    check_dims(logits, "student_logits", (1, 2), "[B, L] (or [B])")
    check_same_shape(logits, probs, "student_logits", "teacher_probs")
    check_finite(probs, "teacher_probs", "drop or re-score these rows in the soft-label dataset")
    if ((probs < 0) | (probs > 1)).any():
        bad = probs[(probs < 0) | (probs > 1)][0].item()
        raise ValueError(
            f"teacher_probs: value {bad} is outside [0, 1]; pass probabilities, e.g. "
            "sigmoid(teacher_score), not raw scores"
        )
    check_finite(logits, "student_logits", "the student produced NaN/inf; check training")
    w = torch.ones_like(logits)
    if weight is not None:
        weight = check_tensor(weight, "weight")
        if weight.dim() == 1 and logits.dim() == 2 and weight.shape[0] == logits.shape[0]:
            weight = weight.unsqueeze(1).expand_as(logits)
        check_same_shape(logits, weight, "student_logits", "weight")
        check_finite(weight, "weight", "weights must be finite and >= 0")
        if (weight < 0).any():
            raise ValueError("weight: negative value; weights must be >= 0")
        w = weight.to(logits.dtype)
    if mask is not None:
        w = w * check_mask(mask, logits.shape, "mask").to(logits.dtype)
    denom = w.sum()
    if denom <= 0:
        raise ValueError("mask/weight: total weight is 0; at least one entry must count")
    per_entry = F.binary_cross_entropy_with_logits(logits, probs.to(logits.dtype), reduction="none")
    return (per_entry * w).sum() / denom
