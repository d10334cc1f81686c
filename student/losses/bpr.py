"""Bayesian personalised ranking loss (Rendle et al., UAI 2009)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_dims, check_finite, check_mask, check_tensor


def bpr_loss(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over valid pairs of ``-log sigmoid(s_pos[b] - s_neg[b, n])`` = softplus(neg - pos).

    Labels: the user of row b prefers their positive item to each of their negatives.

    Args:
        pos_scores: [B] scores of each user's positive item.
        neg_scores: [B, N] (or [B] for one negative each) scores of sampled negatives.
        mask: [B, N] bool, True = valid pair, False = ignore (padding, accidental hit).
    """
    pos = check_tensor(pos_scores, "pos_scores")
    neg = check_tensor(neg_scores, "neg_scores")
    check_dims(pos, "pos_scores", (1,), "[B]")
    check_dims(neg, "neg_scores", (1, 2), "[B] or [B, N]")
    if neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"neg_scores: {neg.shape[0]} rows but pos_scores has {pos.shape[0]}; give one row "
            "of negatives per positive"
        )
    fix = "the student produced NaN/inf; lower the learning rate or check the inputs"
    check_finite(pos, "pos_scores", fix)
    check_finite(neg, "neg_scores", fix)
    neg = neg.unsqueeze(1) if neg.dim() == 1 else neg
    per_pair = F.softplus(neg - pos.unsqueeze(1))  # [B, N]
    if mask is None:
        return per_pair.mean()
    valid = check_mask(mask.unsqueeze(1) if mask.dim() == 1 else mask, neg.shape, "mask")
    if not valid.any():
        raise ValueError("mask: no valid pair; at least one entry must be True")
    return per_pair[valid].mean()
