"""The training objective: the student's forward passes joined to the pure losses of
``student.losses`` (hard labels: sampled softmax with logQ, or BPR; soft labels: listwise KL,
soft BCE, margin-MSE, rank and embedding distillation)."""

from __future__ import annotations

import numpy as np
import torch

from pipelines.training.soft_lists import SoftLists
from student.losses import (
    accidental_hit_mask,
    bpr_loss,
    embedding_distill_loss,
    listwise_kl_loss,
    margin_mse_loss,
    rank_distill_loss,
    sampled_softmax_loss,
    soft_bce_loss,
)


def hard_loss(model, u, h, pos, neg, p_data, p_neg, c) -> torch.Tensor:
    user_emb = model.encode_users(u, h)
    if c.hard_loss == "bpr":
        # every row against all N shared negatives (any N >= 1), accidental hits masked
        s_pos = model.score(user_emb, model.encode_items(pos)[:, None, :])[:, 0]
        s_neg = model.score(user_emb, model.encode_items(neg))  # [B, N]
        valid = accidental_hit_mask(pos, neg)
        return bpr_loss(s_pos, s_neg, mask=valid if valid.any() else None)
    cand = torch.cat([pos, neg])
    scores = model.score(user_emb, model.encode_items(cand))  # [B, B + N]
    B = len(u)
    # logQ: expected count of each item in the step's candidate set (in-batch + sampled)
    q = torch.as_tensor(
        np.log(B * p_data[cand.numpy()] + c.n_negatives * p_neg[cand.numpy()]), dtype=torch.float32
    )
    s_pos = scores[torch.arange(B), torch.arange(B)]
    mask = accidental_hit_mask(pos, cand)
    return sampled_softmax_loss(s_pos, scores, log_q_pos=q[:B], log_q_neg=q, neg_mask=mask)


def list_standardise(t_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Teacher logits [B, L] standardised within each user's (masked) list."""
    m = mask.float()
    n = m.sum(1, keepdim=True).clamp_min(1.0)
    mean = (t_scores * m).sum(1, keepdim=True) / n
    std = (((t_scores - mean) ** 2 * m).sum(1, keepdim=True) / n).sqrt().clamp_min(1e-6)
    return (t_scores - mean) / std


def cold_kl_term(model, cold: SoftLists, hist, rng, c) -> torch.Tensor:
    """Listwise KL over each sampled user's cold-item candidates only: how the teacher ranks
    the items no interaction touched, among themselves (the cold segment's task)."""
    users = rng.choice(cold.users, min(c.soft_users, len(cold.users)), replace=False)
    u = torch.as_tensor(users)
    items, mask = torch.as_tensor(cold.items[users]), torch.as_tensor(cold.mask[users])
    t = torch.as_tensor(cold.scores[users])
    uniq, inv = torch.unique(items, return_inverse=True)
    s = model.score(model.encode_users(u, hist[u]), model.encode_items(uniq)[inv])
    if c.teacher_norm == "list":
        t = list_standardise(t, mask)
    return listwise_kl_loss(s, t, c.temperature, mask=mask)


def soft_terms(
    model, lists: SoftLists, hist, rng, c, weights, proj, teacher_emb, cold_lists=None
) -> dict:
    users = rng.choice(lists.users, min(c.soft_users, len(lists.users)), replace=False)
    u = torch.as_tensor(users)
    items = torch.as_tensor(lists.items[users])
    mask = torch.as_tensor(lists.mask[users])
    t_scores = torch.as_tensor(lists.scores[users])
    uniq, inv = torch.unique(items, return_inverse=True)  # encode each item once per step
    s = model.score(model.encode_users(u, hist[u]), model.encode_items(uniq)[inv])  # [Bu, L]
    terms = {}
    if weights.listwise_kl > 0:
        t_kl = list_standardise(t_scores, mask) if c.teacher_norm == "list" else t_scores
        terms["listwise_kl"] = listwise_kl_loss(s, t_kl, c.temperature, mask=mask)
    if weights.soft_bce > 0:
        # The stored prob is Platt-calibrated on validation pairs (a user's validation
        # positives against eval_negatives sampled negatives), so its level follows that
        # sampling ratio, not P(like); another ratio adds a constant to every teacher logit.
        # teacher_norm="list" therefore centres the logits within each list (over its valid
        # entries) before the sigmoid: the target keeps the teacher's calibrated slope and
        # within-list differences and is exactly invariant to such a shift. "none" uses the
        # stored prob.
        if c.teacher_norm == "list":
            m = mask.float()
            mean = (t_scores * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
            target = torch.sigmoid(t_scores - mean) * m
        else:
            target = torch.as_tensor(lists.probs[users])
        terms["soft_bce"] = soft_bce_loss(s, target, mask=mask)
    if weights.margin_mse > 0:
        # teacher-best candidate (column 0, lists are sorted by teacher rank) against the rest
        terms["margin_mse"] = margin_mse_loss(
            s[:, 0], s[:, 1:], t_scores[:, 0], t_scores[:, 1:], mask=mask[:, 1:]
        )
    if weights.rank > 0:
        k = min(c.rank_k, items.shape[1])
        top = torch.arange(k).expand(len(users), k).clone()
        top[~mask[:, :k]] = -1
        conf = torch.as_tensor(lists.probs[users][:, :k])
        # negatives: the rest of the list, minus padded slots and the user's observed train
        # positives (DLLM2Rec samples negatives among items the user did not interact with)
        rest = torch.arange(k, items.shape[1]).expand(len(users), -1).clone()
        rest[~(mask[:, k:] & ~torch.as_tensor(lists.observed[users][:, k:]))] = -1
        terms["rank"] = rank_distill_loss(s, top, conf, neg_idx=rest)
    if weights.embed > 0:
        idx = torch.as_tensor(
            rng.choice(model.config.n_items, min(1024, model.config.n_items), replace=False)
        )
        terms["embed"] = embedding_distill_loss(model.encode_items(idx), teacher_emb[idx], proj)
    if weights.cold_kl > 0 and cold_lists is not None:
        terms["cold_kl"] = cold_kl_term(model, cold_lists, hist, rng, c)
    return terms
