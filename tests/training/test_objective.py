"""The training objective on hand-made tensors: which candidates each term sees."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from pipelines.training.objective import hard_loss, soft_terms
from pipelines.training.soft_lists import SoftLists
from student.losses import DistillLossWeights, rank_distill_loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


class ItemScoreModel(torch.nn.Module):
    """A stand-in student: the score of (user, item) is a fixed per-item value."""

    def __init__(self, item_scores: list[float]):
        super().__init__()
        self.item_scores = torch.nn.Parameter(torch.tensor(item_scores))
        self.config = SimpleNamespace(n_items=len(item_scores))

    def encode_users(self, u, h):
        return torch.ones(len(u), 1)

    def encode_items(self, items):
        return self.item_scores[items].unsqueeze(-1)

    def score(self, user_emb, item_emb):
        if item_emb.dim() == 2:  # [N, 1] items shared by every user
            return user_emb @ item_emb.T
        return (user_emb.unsqueeze(1) * item_emb).sum(-1)


def test_rank_distill_padding_never_clears_column_0() -> None:
    # one teacher positive (column 0) and a padded slot (-1): column 0 is not a negative
    scores = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    loss = rank_distill_loss(scores, torch.tensor([[0, -1]]))
    assert abs(loss.item() - (softplus(-5.0) + softplus(0.0))) < 1e-6


def test_rank_term_negatives_are_the_unpadded_non_topk_unobserved_candidates() -> None:
    # items 0..5; the user's list (teacher rank order) is items [3, 1, 4, 2] then 2 padded
    # slots (item 0); item 4 is an observed train positive outside the teacher's top-2
    item_scores = [7.0, 1.0, -2.0, 2.0, 4.0, 9.0]
    model = ItemScoreModel(item_scores)
    shape = (1, 6)
    lists = SoftLists(
        items=np.array([[3, 1, 4, 2, 0, 0]]),
        scores=np.zeros(shape, np.float32),
        probs=np.array([[0.9, 0.6, 0.5, 0.1, 0.0, 0.0]], np.float32),
        observed=np.array([[False, False, True, False, False, False]]),
        mask=np.array([[True, True, True, True, False, False]]),
        users=np.array([0]),
        item_embeddings=None,
    )
    c = SimpleNamespace(soft_users=1, rank_k=2, teacher_norm="none", temperature=1.0)
    weights = DistillLossWeights(hard=0.0, rank=1.0)
    hist = torch.zeros(1, 1, dtype=torch.long)
    terms = soft_terms(model, lists, hist, np.random.default_rng(0), c, weights, None, None)
    w0, w1 = 0.9, math.exp(-1.0) * 0.6
    pos = (w0 * softplus(-2.0) + w1 * softplus(-1.0)) / (w0 + w1)
    neg = softplus(-2.0)  # item 2 only: not item 4 (observed), not the padded item 0 slots
    assert abs(terms["rank"].item() - (pos + neg)) < 1e-5


def test_bpr_hard_loss_with_fewer_negatives_than_the_batch() -> None:
    model = ItemScoreModel([0.0, 1.0, 2.0, 3.0, 4.0])
    u = torch.arange(4)
    pos = torch.tensor([4, 4, 3, 3])
    p = np.full(5, 0.2)
    for n in (1, 3, 4, 9):
        c = SimpleNamespace(hard_loss="bpr", n_negatives=n)
        neg = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])[:n]
        loss = hard_loss(model, u, None, pos, neg, p, p, c)
        # every (row, negative) pair counts: mean of softplus(s_neg - s_pos)
        expected = np.mean([softplus(float(j) - float(i)) for i in pos for j in neg])
        assert abs(loss.item() - expected) < 1e-5, n
    # a negative that is the row's own positive (item 4 for rows 0 and 1) is not a pair
    c = SimpleNamespace(hard_loss="bpr", n_negatives=2)
    loss = hard_loss(model, u, None, pos, torch.tensor([4, 0]), p, p, c)
    pairs = [(4, 0), (4, 0), (3, 4), (3, 0), (3, 4), (3, 0)]
    expected = np.mean([softplus(float(j) - float(i)) for i, j in pairs])
    assert abs(loss.item() - expected) < 1e-5
