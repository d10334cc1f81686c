"""The training objective on hand-made tensors: which candidates each term sees."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import torch

from pipelines.training.batch import ObjectiveInputs, Step, score_lists
from pipelines.training.objective import build_terms
from pipelines.training.soft_lists import SoftLists
from pipelines.training.terms import HardTerm, TermSettings
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


def soft_terms(model, lists, hist, rng, settings, weights) -> dict[str, torch.Tensor]:
    """The objective's soft-label terms on one step's sampled lists (no hard batch)."""
    soft = score_lists(model, lists, hist, rng, settings.soft_users)
    step = Step(model, rng, ObjectiveInputs(hist, None, None, lists), None, None, None, None, soft)
    return {t.name: t(step) for t in build_terms(weights, settings) if t.needs_labels}


def hard_loss(model, u, h, pos, neg, p_data, p_neg, settings) -> torch.Tensor:
    inputs = ObjectiveInputs(None, p_data, p_neg)
    return HardTerm.from_config(DistillLossWeights(), settings)(
        Step(model, None, inputs, u, h, pos, neg)
    )


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
    c = TermSettings(soft_users=1, rank_k=2, teacher_norm="none")
    weights = DistillLossWeights(hard=0.0, rank=1.0)
    hist = torch.zeros(1, 1, dtype=torch.long)
    terms = soft_terms(model, lists, hist, np.random.default_rng(0), c, weights)
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
        c = TermSettings(hard_loss="bpr", n_negatives=n)
        neg = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])[:n]
        loss = hard_loss(model, u, None, pos, neg, p, p, c)
        # every (row, negative) pair counts: mean of softplus(s_neg - s_pos)
        expected = np.mean([softplus(float(j) - float(i)) for i in pos for j in neg])
        assert abs(loss.item() - expected) < 1e-5, n
    # a negative that is the row's own positive (item 4 for rows 0 and 1) is not a pair
    c = TermSettings(hard_loss="bpr", n_negatives=2)
    loss = hard_loss(model, u, None, pos, torch.tensor([4, 0]), p, p, c)
    pairs = [(4, 0), (4, 0), (3, 4), (3, 0), (3, 4), (3, 0)]
    expected = np.mean([softplus(float(j) - float(i)) for i, j in pairs])
    assert abs(loss.item() - expected) < 1e-5


def test_soft_bce_targets_ignore_a_constant_shift_of_the_teacher_logits() -> None:
    # Platt's intercept moves with the validation sampling ratio (1 positive per user to
    # eval_negatives negatives): the same teacher with another ratio adds a constant to every
    # logit. With teacher_norm="list" soft BCE sees only differences within a list.
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, generator=gen).numpy()
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2, [True] * 4 + [False]])
    c = TermSettings(soft_users=3, rank_k=2, teacher_norm="list")
    weights = DistillLossWeights(hard=0.0, soft_bce=1.0)
    hist = torch.zeros(3, 1, dtype=torch.long)

    def run(shift: float, norm: str = "list") -> tuple[float, torch.Tensor]:
        model = ItemScoreModel([0.5, -1.0, 2.0, 0.0, 1.0, -0.5, 0.3, 1.5, -2.0, 0.7])
        s = np.where(mask, scores + shift, 0.0).astype(np.float32)
        lists = SoftLists(
            items=np.where(mask, np.arange(15).reshape(3, 5) % 10, 0),
            scores=s,
            probs=np.where(mask, 1 / (1 + np.exp(-s)), 0.0).astype(np.float32),
            observed=np.zeros((3, 5), bool),
            mask=mask,
            users=np.arange(3),
            item_embeddings=None,
        )
        cc = dataclasses.replace(c, teacher_norm=norm)
        rng = np.random.default_rng(0)
        loss = soft_terms(model, lists, hist, rng, cc, weights)["soft_bce"]
        loss.backward()
        return loss.item(), model.item_scores.grad.clone()

    base_loss, base_grad = run(0.0)
    for shift in (-4.0, 3.0):  # e.g. 1:50 vs 1:1 sampling moves the logits by ~log(50)
        loss, grad = run(shift)
        assert abs(loss - base_loss) < 1e-6
        torch.testing.assert_close(grad, base_grad)
    # teacher_norm="none" keeps the stored probabilities, so the shift shows there
    _, none_grad = run(0.0, "none")
    _, none_shifted = run(3.0, "none")
    assert not torch.allclose(none_grad, none_shifted)
