"""Sampled softmax with the logQ correction (Yi et al., RecSys 2019; Bengio & Senecal 2008)."""

from __future__ import annotations

import torch

from ._checks import check_dims, check_finite, check_mask, check_tensor

_REDUCTIONS = ("mean", "sum", "none")


def accidental_hit_mask(pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> torch.Tensor:
    """Valid-negative mask [B, N]: False where a negative is the row's own positive item.

    pos_ids [B] item ids of the positives; neg_ids [N] (shared) or [B, N] item ids of the
    negatives. For in-batch negatives pass ``neg_ids = pos_ids``: this masks the diagonal and
    any other row that holds the same item.
    """
    if pos_ids.dim() != 1:
        raise ValueError(f"pos_ids: expected shape [B], got {list(pos_ids.shape)}")
    if neg_ids.dim() == 1:
        neg_ids = neg_ids.unsqueeze(0).expand(pos_ids.shape[0], -1)
    if neg_ids.dim() != 2 or neg_ids.shape[0] != pos_ids.shape[0]:
        raise ValueError(
            f"neg_ids: expected [N] or [B={pos_ids.shape[0]}, N], got {list(neg_ids.shape)}"
        )
    return neg_ids != pos_ids.unsqueeze(1)


def sampled_softmax_loss(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    log_q_pos: torch.Tensor | None = None,
    log_q_neg: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Softmax cross-entropy of each positive against its negatives, logQ-corrected.

    Labels: row b's positive (``pos_scores[b]``) is the one correct class; every valid entry of
    row b of ``neg_scores`` is a wrong class. Each candidate's logit is its score minus the log
    of the probability that the sampler drew it (``log_q``), which removes the bias towards
    popular items of in-batch and frequency-sampled negatives:

        loss_b = logsumexp([s_pos - lq_pos, (s_neg - lq_neg)[valid]]) - (s_pos - lq_pos)

    Args:
        pos_scores: [B] student scores of the positive item of each row.
        neg_scores: [B, N] per-row negatives, or [N] negatives shared by all rows (e.g. the
            in-batch item scores ``user_emb @ item_emb.T`` give [B, B] with the positives on
            the diagonal; mask them with ``accidental_hit_mask(pos_ids, pos_ids)``).
        log_q_pos: [B] log sampling probability of each positive, or None (no correction).
        log_q_neg: [N] or [B, N] log sampling probability of each negative, or None.
        neg_mask: [B, N] bool, True = valid negative, False = ignore (accidental hit, padding).
        reduction: "mean" (over rows), "sum" or "none" ([B]).
    """
    pos = check_tensor(pos_scores, "pos_scores")
    neg = check_tensor(neg_scores, "neg_scores")
    check_dims(pos, "pos_scores", (1,), "[B]")
    check_dims(neg, "neg_scores", (1, 2), "[N] (shared) or [B, N]")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: expected one of {list(_REDUCTIONS)}")
    batch = pos.shape[0]
    if neg.dim() == 2 and neg.shape[0] != batch:
        raise ValueError(
            f"neg_scores: {neg.shape[0]} rows but pos_scores has {batch}; give one row of "
            "negatives per positive, or a 1-D [N] tensor shared by all rows"
        )
    if neg.shape[-1] == 0:
        raise ValueError("neg_scores: no negatives (N = 0); sample at least one negative")
    fix_scores = "the student produced NaN/inf; lower the learning rate or check the inputs"
    check_finite(pos, "pos_scores", fix_scores)
    check_finite(neg, "neg_scores", fix_scores)
    neg = neg.unsqueeze(0).expand(batch, -1) if neg.dim() == 1 else neg
    fix_q = (
        "log_q must be the log sampling probability (p > 0) of each candidate; check the sampler"
    )
    if log_q_pos is not None:
        check_tensor(log_q_pos, "log_q_pos")
        if log_q_pos.shape != pos.shape:
            raise ValueError(
                f"log_q_pos: expected shape {list(pos.shape)} like pos_scores, got "
                f"{list(log_q_pos.shape)}"
            )
        check_finite(log_q_pos, "log_q_pos", fix_q)
        pos = pos - log_q_pos
    if log_q_neg is not None:
        check_tensor(log_q_neg, "log_q_neg")
        if log_q_neg.shape not in (neg.shape, neg.shape[1:]):
            raise ValueError(
                f"log_q_neg: expected shape [N={neg.shape[1]}] or {list(neg.shape)}, got "
                f"{list(log_q_neg.shape)}"
            )
        check_finite(log_q_neg, "log_q_neg", fix_q)
        neg = neg - log_q_neg
    if neg_mask is not None:
        valid = check_mask(neg_mask, neg.shape, "neg_mask")
        neg = neg.masked_fill(~valid, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [B, 1 + N]
    loss = torch.logsumexp(logits, dim=1) - pos
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()
