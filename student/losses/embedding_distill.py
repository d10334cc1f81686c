"""Embedding distillation: align projected student item embeddings with the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_dims, check_finite, check_tensor


def embedding_distill_loss(
    student_item_emb: torch.Tensor,
    teacher_item_emb: torch.Tensor,
    projection: nn.Module | torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean_i (1 - cos(proj(student_i), teacher_i))``, in [0, 2].

    Cosine rather than MSE: it ignores the teacher's norm (sentence embeddings such as
    all-MiniLM-L6-v2 are unit-norm) and the student's own scale, and matches only directions.

    Labels: ``teacher_item_emb[i]`` is the frozen teacher embedding of the same item as
    ``student_item_emb[i]`` (same item order).

    Args:
        student_item_emb: [N, D_s] student item embeddings.
        teacher_item_emb: [N, D_t] teacher item embeddings, finite, no all-zero rows.
        projection: a module mapping [N, D_s] -> [N, D_t] (e.g. ``nn.Linear(D_s, D_t)``,
            trained with the student), a weight [D_t, D_s] used as ``x @ W.T``, or None when
            D_s == D_t.
    """
    student = check_tensor(student_item_emb, "student_item_emb")
    teacher = check_tensor(teacher_item_emb, "teacher_item_emb")
    check_dims(student, "student_item_emb", (2,), "[N, D_s]")
    check_dims(teacher, "teacher_item_emb", (2,), "[N, D_t]")
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"teacher_item_emb: {teacher.shape[0]} rows but student_item_emb has "
            f"{student.shape[0]}; give the teacher embedding of the same items in the same order"
        )
    check_finite(teacher, "teacher_item_emb", "re-encode these items with the teacher")
    check_finite(student, "student_item_emb", "the student produced NaN/inf; check training")
    zero = teacher.detach().norm(dim=1) == 0
    if zero.any():
        row = int(torch.nonzero(zero)[0])
        raise ValueError(
            f"teacher_item_emb: row {row} is all zeros, cosine is undefined; drop the item or "
            "give it a real embedding"
        )
    if projection is None:
        projected = student
    elif isinstance(projection, nn.Module):
        projected = projection(student)
    elif torch.is_tensor(projection):
        if projection.dim() != 2 or projection.shape[1] != student.shape[1]:
            raise ValueError(
                f"projection: weight must be [D_t, D_s={student.shape[1]}] (nn.Linear layout), "
                f"got {list(projection.shape)}"
            )
        projected = student @ projection.T
    else:
        raise ValueError(
            f"projection: expected an nn.Module, a weight tensor or None, got "
            f"{type(projection).__name__}"
        )
    if projected.shape != teacher.shape:
        raise ValueError(
            f"projection: maps student_item_emb to {list(projected.shape)}, but "
            f"teacher_item_emb is {list(teacher.shape)}; project D_s -> D_t"
            + (" (pass a projection)" if projection is None else "")
        )
    return (1.0 - F.cosine_similarity(projected, teacher, dim=1)).mean()
