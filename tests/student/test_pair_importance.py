"""DLLM2Rec-style importance weights of the teacher's ranked pairs (student/losses/
pair_importance.py), in margin-MSE and the rank term; off = today's loss exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.training.batch import SoftBatch
from pipelines.training.soft_lists import SoftLists
from pipelines.training.terms import MarginMSETerm, RankTerm, TermSettings
from student.losses import DistillLossWeights, margin_mse_loss, pair_importance


def test_weights_follow_position_confidence_and_agreement():
    # one user; the teacher ranks a above b, c, d; the student agrees on b and d, not on c
    s1, s2 = torch.tensor([1.0]), torch.tensor([[0.0, 2.0, 0.5]])
    t1, t2 = torch.tensor([3.0]), torch.tensor([[2.0, 2.0, 0.0]])
    w = pair_importance(s1, s2, t1, t2, lam=1.0, agree_boost=1.0)[0]
    raw = [math.exp(0) * _sig(1.0) * 2, math.exp(-1) * _sig(1.0) * 1, math.exp(-2) * _sig(3.0) * 2]
    expected = torch.tensor(raw) * 3 / sum(raw)
    assert torch.allclose(w, expected, atol=1e-6) and abs(float(w.mean()) - 1) < 1e-6
    # b and c have the same teacher margin: c (one rank deeper, student disagrees) weighs less
    assert w[1] < w[0]
    # the weights carry no gradient
    s2g = s2.clone().requires_grad_()
    assert not pair_importance(s1, s2g, t1, t2).requires_grad


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_weighting_lowers_the_loss_of_pairs_the_student_reverses():
    # pair 0: the student agrees, small error; pair 1: the student reverses it, large error.
    # The weighted loss trusts the reversed pair less, so it is below the plain mean.
    s1, s2 = torch.tensor([1.0]), torch.tensor([[0.5, 1.5]])
    t1, t2 = torch.tensor([2.0]), torch.tensor([[1.0, 1.0]])
    plain = margin_mse_loss(s1, s2, t1, t2)
    w = pair_importance(s1, s2, t1, t2, lam=1e6, agree_boost=1.0)  # no position decay
    weighted = margin_mse_loss(s1, s2, t1, t2, weight=w)
    assert float(plain) == pytest.approx((0.25 + 2.25) / 2)
    assert float(weighted) == pytest.approx((2 * 0.25 + 1 * 2.25) / 3)
    assert weighted < plain


def test_bad_inputs_say_what_is_wrong():
    s1, s2, t1, t2 = torch.zeros(1), torch.zeros(1, 2), torch.zeros(1), torch.zeros(1, 2)
    with pytest.raises(ValueError, match="lam"):
        pair_importance(s1, s2, t1, t2, lam=0)
    with pytest.raises(ValueError, match="teacher_second"):
        pair_importance(s1, s2, t1, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="weight"):
        margin_mse_loss(s1, s2, t1, t2, weight=-torch.ones(1, 2))


def _step(seed: int = 0):
    """A hand-made soft batch of 3 users x 6 candidates (teacher rank order), one padded."""
    g = torch.Generator().manual_seed(seed)
    n, length = 3, 6
    teacher = torch.sort(torch.randn(n, length, generator=g), dim=1, descending=True).values
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[2, 4:] = False
    observed = np.zeros((n, length), bool)
    observed[0, 5] = True
    probs = torch.sigmoid(teacher).numpy()
    lists = SoftLists(np.zeros((n, length), np.int64), teacher.numpy(), probs, observed,
                      mask.numpy(), np.arange(n), None)  # fmt: skip
    scores = torch.randn(n, length, generator=g)
    soft = SoftBatch(np.arange(n), torch.zeros(n, length, dtype=torch.long), mask, teacher,
                     scores, lists)  # fmt: skip

    class _Step:
        pass

    step = _Step()
    step.soft = soft
    return step


@pytest.mark.parametrize("cls", [MarginMSETerm, RankTerm])
def test_option_off_is_todays_loss_and_on_changes_it(cls):
    w = DistillLossWeights(margin_mse=1.0, rank=1.0)
    step = _step()
    b = step.soft
    off = cls.from_config(w, TermSettings(rank_k=3))(step)
    on = cls.from_config(w, TermSettings(rank_k=3, teacher_confidence=True))(step)
    if cls is MarginMSETerm:  # today's call, written out
        s, t, m = b.scores, b.teacher, b.mask
        today = margin_mse_loss(s[:, 0], s[:, 1:], t[:, 0], t[:, 1:], mask=m[:, 1:])
    else:
        from student.losses import rank_distill_loss

        top = torch.arange(3).expand(3, 3).clone()
        rest = torch.arange(3, 6).expand(3, -1).clone()
        rest[~(b.mask[:, 3:] & ~torch.as_tensor(b.lists.observed[:, 3:]))] = -1
        today = rank_distill_loss(b.scores, top, torch.as_tensor(b.lists.probs[:, :3]),
                                  neg_idx=rest)  # fmt: skip
    assert torch.equal(off, today)
    assert not torch.allclose(on, off)
