"""Importance-aware ranking distillation from a teacher's top-K list (after DLLM2Rec)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_dims, check_finite, check_tensor


def _check_index(idx: object, name: str, n_cols: int, batch: int) -> torch.Tensor:
    if not torch.is_tensor(idx) or idx.dtype not in (torch.int64, torch.int32):
        got = idx.dtype if torch.is_tensor(idx) else type(idx).__name__
        raise ValueError(f"{name}: expected an int64 tensor of column indices, got {got}")
    if idx.dim() != 2 or idx.shape[0] != batch:
        raise ValueError(f"{name}: expected shape [B={batch}, K], got {list(idx.shape)}")
    if idx.numel() and (int(idx.min()) < -1 or int(idx.max()) >= n_cols):
        raise ValueError(
            f"{name}: indices must be column positions of student_scores in [0, {n_cols - 1}] "
            f"or -1 for padding; got min {int(idx.min())}, max {int(idx.max())}"
        )
    return idx.long()


def _check_nonneg(value: float, name: str, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (strict and value == 0):
        raise ValueError(f"{name}={value!r}: expected a finite float {'>' if strict else '>='} 0")
    return float(value)


def rank_distill_loss(
    student_scores: torch.Tensor,
    teacher_topk_idx: torch.Tensor,
    teacher_conf: torch.Tensor | None = None,
    neg_idx: torch.Tensor | None = None,
    lam: float = 1.0,
    neg_weight: float = 1.0,
    consistency: float = 0.0,
) -> torch.Tensor:
    """Teacher's top-K as weighted positives, after DLLM2Rec (Cui et al., RecSys 2024).

    Reference: Y. Cui, F. Liu, P. Wang, B. Wang, H. Tang, Y. Wan, J. Wang, J. Chen,
    "Distillation Matters: Empowering Sequential Recommenders to Match the Performance of
    Large Language Models", RecSys 2024, doi:10.1145/3640457.3688118, arXiv:2405.00338.

    Labels: ``teacher_topk_idx[b, k]`` is the column (in ``student_scores``) of the teacher's
    rank-k candidate for user b (k = 0 is the teacher's best; -1 pads short lists);
    ``teacher_conf[b, k]`` in [0, 1] is how much to trust it (e.g. sigmoid of the teacher score,
    or 1 when it agrees with an observed positive). Exact formula, with s = student_scores:

        w~[b,k] = exp(-k / lam) * conf[b,k] * (1 + consistency * hit[b,k]) * valid[b,k]
        w[b,k]  = w~[b,k] / sum_k w~[b,k]                   (rows with sum 0 are skipped)
        L_b     = sum_k w[b,k] * softplus(-s[b, idx[b,k]])          # -log sigmoid(s_pos)
                  + neg_weight * mean_{m in Neg_b} softplus(s[b, m])  # -log(1 - sigmoid(s_neg))
        loss    = mean_b L_b

    ``hit[b,k]`` = 1 if the candidate is also in the student's own top-K (DLLM2Rec's
    consistency-aware weight; computed without gradient). ``Neg_b`` = the valid entries of
    ``neg_idx[b]`` that are not teacher positives, or, if ``neg_idx`` is None, every column not
    in the teacher's top-K (so pass ``neg_idx`` when some columns are padding or must not
    count as negatives, e.g. the user's observed positives). Difference from the paper: DLLM2Rec mixes the position, confidence
    and consistency weights additively (gamma_p*w_p + gamma_c*w_c + gamma_o*w_o); here they
    multiply, so a candidate the teacher gives zero confidence gets zero weight.

    Args:
        student_scores: [B, C] student scores over a candidate set (C may be the catalogue).
        teacher_topk_idx: [B, K] int64 column indices in teacher rank order, -1 = padding.
        teacher_conf: [B, K] confidences in [0, 1], or None (all 1).
        neg_idx: [B, M] int64 column indices of sampled negatives (-1 = padding), or None.
        lam: rank decay lambda > 0 (larger = flatter weights over the K positions).
        neg_weight: weight >= 0 of the negative term.
        consistency: boost >= 0 for candidates the student also ranks in its top-K.
    """
    s = check_tensor(student_scores, "student_scores")
    check_dims(s, "student_scores", (2,), "[B, C]")
    check_finite(s, "student_scores", "the student produced NaN/inf; check training")
    batch, n_cols = s.shape
    idx = _check_index(teacher_topk_idx, "teacher_topk_idx", n_cols, batch)
    lam = _check_nonneg(lam, "lam", strict=True)
    neg_weight = _check_nonneg(neg_weight, "neg_weight")
    consistency = _check_nonneg(consistency, "consistency")
    weights = _positive_weights(s, idx, teacher_conf, lam, consistency)
    row_sum = weights.sum(dim=1)
    rows = row_sum > 0
    if not rows.any():
        raise ValueError(
            "teacher_topk_idx/teacher_conf: every row has zero total weight (all padding or "
            "zero confidence); drop such rows before calling the loss"
        )
    weights = weights / row_sum.clamp_min(torch.finfo(s.dtype).tiny).unsqueeze(1)
    pos_term = (weights * F.softplus(-s.gather(1, idx.clamp_min(0)))).sum(dim=1)  # [B]
    neg_term = _negative_term(s, idx, neg_idx)
    return (pos_term + neg_weight * neg_term)[rows].mean()


def _positive_weights(
    s: torch.Tensor,
    idx: torch.Tensor,
    teacher_conf: torch.Tensor | None,
    lam: float,
    consistency: float,
) -> torch.Tensor:
    """``w~[b, k]`` of the docstring (not yet normalised): [B, K], 0 at padding."""
    batch, n_cols = s.shape
    valid = idx >= 0
    safe_idx = idx.clamp_min(0)
    k = idx.shape[1]
    weights = torch.exp(-torch.arange(k, dtype=s.dtype, device=s.device) / lam).expand(batch, k)
    if teacher_conf is not None:
        conf = check_tensor(teacher_conf, "teacher_conf")
        if conf.shape != idx.shape:
            raise ValueError(
                f"teacher_conf: shape {list(conf.shape)} does not match teacher_topk_idx "
                f"{list(idx.shape)}; give one confidence per listed candidate"
            )
        check_finite(conf, "teacher_conf", "drop or re-score these rows in the soft-label data")
        if ((conf < 0) | (conf > 1)).any():
            raise ValueError(
                "teacher_conf: values must lie in [0, 1]; map teacher scores through a "
                "sigmoid or rescale them"
            )
        weights = weights * conf.to(s.dtype)
    if consistency > 0:
        student_top = s.detach().topk(min(k, n_cols), dim=1).indices  # [B, K]
        hit = (safe_idx.unsqueeze(2) == student_top.unsqueeze(1)).any(dim=2)
        weights = weights * (1.0 + consistency * hit.to(s.dtype))
    return weights * valid.to(s.dtype)


def _negative_term(
    s: torch.Tensor, idx: torch.Tensor, neg_idx: torch.Tensor | None
) -> torch.Tensor:
    """``mean_{m in Neg_b} softplus(s[b, m])`` per row: [B]."""
    batch, n_cols = s.shape
    valid = idx >= 0
    # scatter only the valid entries: a padded -1 (clamped to 0) must not clear column 0
    is_pos = torch.zeros_like(s, dtype=torch.bool)
    rows_v, ks_v = valid.nonzero(as_tuple=True)
    is_pos[rows_v, idx[rows_v, ks_v]] = True
    if neg_idx is None:
        neg_scores, neg_valid = s, ~is_pos
    else:
        nidx = _check_index(neg_idx, "neg_idx", n_cols, batch)
        safe_n = nidx.clamp_min(0)
        neg_scores = s.gather(1, safe_n)
        neg_valid = (nidx >= 0) & ~is_pos.gather(1, safe_n)
    neg_mask = neg_valid.to(s.dtype)
    return (F.softplus(neg_scores) * neg_mask).sum(dim=1) / neg_mask.sum(dim=1).clamp_min(1)
