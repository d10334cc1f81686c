"""Loss functions on hand-made tensors with hand-computed values, and their input checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from student.losses import (
    DistillLossWeights,
    accidental_hit_mask,
    bpr_loss,
    embedding_distill_loss,
    listwise_kl_loss,
    margin_mse_loss,
    rank_distill_loss,
    sampled_softmax_loss,
    soft_bce_loss,
    total_loss,
)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> bool:
    return abs(value.item() - expected) <= tol * max(1.0, abs(expected))


# ---- sampled softmax ------------------------------------------------------------------------
def test_sampled_softmax_by_hand() -> None:
    loss = sampled_softmax_loss(t([2.0]), t([[1.0, 0.0]]))
    assert close(loss, math.log(math.exp(2) + math.exp(1) + 1) - 2)


def test_sampled_softmax_equals_cross_entropy_without_corrections() -> None:
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(5, generator=gen), torch.randn(5, 7, generator=gen)
    expected = F.cross_entropy(torch.cat([pos[:, None], neg], 1), torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(sampled_softmax_loss(pos, neg), expected)


def test_sampled_softmax_logq_correction_by_hand() -> None:
    # logits: pos 2 - log 0.5, negs 1 - log 0.25 and 0 - log 0.25
    loss = sampled_softmax_loss(
        t([2.0]), t([[1.0, 0.0]]), log_q_pos=t([math.log(0.5)]), log_q_neg=t([math.log(0.25)] * 2)
    )
    pos = 2 + math.log(2)
    logits = [pos, 1 + math.log(4), math.log(4)]
    assert close(loss, math.log(sum(math.exp(x) for x in logits)) - pos)


def test_sampled_softmax_masks_accidental_hits() -> None:
    loss = sampled_softmax_loss(t([2.0]), t([[1.0, 50.0]]), neg_mask=torch.tensor([[True, False]]))
    assert close(loss, math.log1p(math.exp(-1)))


def test_shared_negatives_equal_per_row_negatives() -> None:
    pos, neg, lq = t([1.0, -1.0]), t([0.5, 0.0, 2.0]), t([-1.0, -2.0, -3.0])
    shared = sampled_softmax_loss(pos, neg, log_q_neg=lq, reduction="none")
    per_row = sampled_softmax_loss(
        pos, neg.expand(2, 3), log_q_neg=lq.expand(2, 3), reduction="none"
    )
    torch.testing.assert_close(shared, per_row)
    assert close(sampled_softmax_loss(pos, neg, log_q_neg=lq, reduction="sum"), shared.sum().item())


def test_in_batch_negatives_with_accidental_hit_mask() -> None:
    pos_ids = torch.tensor([4, 7, 4])
    mask = accidental_hit_mask(pos_ids, pos_ids)
    assert mask.tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    scores = t([[3.0, 1.0, 3.0], [0.0, 2.0, 0.0], [3.0, 1.0, 3.0]])
    loss = sampled_softmax_loss(scores.diagonal(), scores, neg_mask=mask, reduction="none")
    # row 0: positive 3 against the one valid negative 1 (column 2 holds the same item)
    assert close(loss[0], math.log1p(math.exp(-2)))
    assert accidental_hit_mask(torch.tensor([1, 2]), torch.tensor([2, 3])).tolist() == [
        [True, True],
        [False, True],
    ]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"pos_scores": t([[1.0]])}, r"pos_scores: expected shape \[B\]"),
        ({"neg_scores": t([[1.0], [2.0], [3.0]])}, "3 rows but pos_scores has 2"),
        ({"neg_scores": torch.zeros(2, 0)}, "no negatives"),
        (
            {"pos_scores": t([float("nan"), 1.0])},
            r"pos_scores: non-finite value nan at index \[0\]",
        ),
        ({"log_q_neg": t([0.0, 0.0, 0.0])}, "log_q_neg: expected shape"),
        ({"log_q_pos": t([float("-inf"), 0.0])}, "sampling probability"),
        ({"neg_mask": torch.ones(2, 3, dtype=torch.bool)}, "neg_mask: shape"),
        ({"reduction": "max"}, "reduction='max'"),
        ({"pos_scores": torch.tensor([1, 2])}, "float tensor"),
    ],
)
def test_sampled_softmax_validation(kwargs, match: str) -> None:
    args = {"pos_scores": t([1.0, 2.0]), "neg_scores": t([[0.0, 1.0], [1.0, 0.0]])} | kwargs
    with pytest.raises(ValueError, match=match):
        sampled_softmax_loss(**args)


# ---- BPR --------------------------------------------------------------------------------------
def test_bpr_by_hand() -> None:
    assert close(bpr_loss(t([1.0, 0.0]), t([[0.0], [0.0]])), (softplus(-1) + math.log(2)) / 2)
    assert close(bpr_loss(t([1.0, 0.0]), t([0.0, 0.0])), (softplus(-1) + math.log(2)) / 2)
    masked = bpr_loss(t([1.0]), t([[0.0, 9.0]]), mask=torch.tensor([[True, False]]))
    assert close(masked, softplus(-1))


def test_bpr_validation() -> None:
    with pytest.raises(ValueError, match="2 rows but pos_scores has 1"):
        bpr_loss(t([1.0]), t([[0.0], [1.0]]))
    with pytest.raises(ValueError, match="no valid pair"):
        bpr_loss(t([1.0]), t([[0.0]]), mask=torch.tensor([[False]]))
    with pytest.raises(ValueError, match="neg_scores: non-finite"):
        bpr_loss(t([1.0]), t([[float("inf")]]))


# ---- listwise KL --------------------------------------------------------------------------------
def _kl(p_logits: list[float], q_logits: list[float], temp: float) -> float:
    def softmax(xs):
        exps = [math.exp(x / temp) for x in xs]
        return [e / sum(exps) for e in exps]

    p, q = softmax(p_logits), softmax(q_logits)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_listwise_kl_is_zero_for_equal_and_shifted_lists() -> None:
    scores = t([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    assert listwise_kl_loss(scores, scores.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert listwise_kl_loss(scores, scores + 5.0).item() == pytest.approx(0.0, abs=1e-6)


def test_listwise_kl_known_value_on_2x3() -> None:
    teacher = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    student = [[3.0, 2.0, 1.0], [0.0, 0.0, 1.0]]
    expected = (_kl(teacher[0], student[0], 1) + _kl(teacher[1], student[1], 1)) / 2
    assert close(listwise_kl_loss(t(student), t(teacher)), expected, 1e-5)
    # row 0 by hand: p = softmax(1,2,3), q = reversed p, KL = (p3 - p1) * 2
    p = [math.exp(x) / sum(math.exp(y) for y in (1, 2, 3)) for x in (1, 2, 3)]
    assert close(t([(p[2] - p[0]) * 2]), _kl(teacher[0], student[0], 1), 1e-5)


def test_listwise_kl_t_squared_scaling() -> None:
    teacher, student = [[1.0, 2.0, 3.0]], [[3.0, 2.0, 1.0]]
    loss_t2 = listwise_kl_loss(t(student), t(teacher), temperature=2.0)
    assert close(loss_t2, 4.0 * _kl(teacher[0], student[0], 2.0), 1e-5)
    # T^2 * KL at T equals T^2 times the T=1 loss on scores divided by T
    loss_scaled = listwise_kl_loss(t(student) / 2, t(teacher) / 2, temperature=1.0)
    assert close(loss_t2, 4.0 * loss_scaled.item(), 1e-5)


def test_listwise_kl_mask_ignores_padding() -> None:
    student, teacher = t([[3.0, 2.0, 99.0]]), t([[1.0, 2.0, -50.0]])
    mask = torch.tensor([[True, True, False]])
    student.requires_grad_(True)
    loss = listwise_kl_loss(student, teacher, mask=mask)
    assert close(loss, _kl([1.0, 2.0], [3.0, 2.0], 1.0), 1e-5)
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, 2] == 0
    # A row with no valid entry is left out of the mean.
    two_rows = listwise_kl_loss(
        t([[3.0, 2.0], [0.0, 0.0]]),
        t([[1.0, 2.0], [5.0, 0.0]]),
        mask=torch.tensor([[1, 1], [0, 0]]),
    )
    assert close(two_rows, _kl([1.0, 2.0], [3.0, 2.0], 1.0), 1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"teacher_scores": t([[1.0, float("nan")]])}, "teacher_scores: non-finite value nan"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"temperature": float("inf")}, "temperature=inf"),
        ({"teacher_scores": t([[1.0, 2.0, 3.0]])}, "does not match student_scores"),
        ({"mask": torch.zeros(1, 2, dtype=torch.bool)}, "every entry is False"),
        ({"mask": t([[0.5, 1.0]])}, "bool"),
        ({"student_scores": t([1.0, 2.0])}, r"expected shape \[B, L\]"),
    ],
)
def test_listwise_kl_validation(kwargs, match: str) -> None:
    args = {"student_scores": t([[1.0, 2.0]]), "teacher_scores": t([[0.0, 1.0]])} | kwargs
    with pytest.raises(ValueError, match=match):
        listwise_kl_loss(**args)


# ---- soft BCE -----------------------------------------------------------------------------------
def test_soft_bce_by_hand() -> None:
    # BCE(logit 0, p) = log 2 for every p; BCE(2, 1) = softplus(-2); BCE(-1, 0.25) by formula
    expected = [math.log(2), softplus(-2), 0.25 * softplus(1) + 0.75 * softplus(-1)]
    loss = soft_bce_loss(t([[0.0, 2.0, -1.0]]), t([[0.3, 1.0, 0.25]]))
    assert close(loss, sum(expected) / 3, 1e-6)
    masked = soft_bce_loss(t([[0.0, 2.0]]), t([[0.3, 1.0]]), mask=torch.tensor([[True, False]]))
    assert close(masked, math.log(2))
    weighted = soft_bce_loss(t([[0.0, 2.0]]), t([[0.3, 1.0]]), weight=t([[3.0, 1.0]]))
    assert close(weighted, (3 * math.log(2) + softplus(-2)) / 4)
    per_user = soft_bce_loss(t([[0.0], [2.0]]), t([[0.3], [1.0]]), weight=t([3.0, 1.0]))
    assert close(per_user, weighted.item())


def test_soft_bce_minimum_is_at_the_teacher_logit() -> None:
    probs = t([[0.2, 0.9]])
    logits = torch.log(probs / (1 - probs)).requires_grad_(True)
    soft_bce_loss(logits, probs).backward()
    assert logits.grad.abs().max() < 1e-6


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"teacher_probs": t([[1.5, 0.5]])}, r"value 1.5 is outside \[0, 1\]"),
        ({"teacher_probs": t([[-0.1, 0.5]])}, r"outside \[0, 1\]"),
        ({"teacher_probs": t([[float("nan"), 0.5]])}, "teacher_probs: non-finite"),
        ({"weight": t([[-1.0, 1.0]])}, "weight: negative"),
        ({"weight": t([[0.0, 0.0]])}, "total weight is 0"),
        ({"teacher_probs": t([[0.5]])}, "does not match"),
    ],
)
def test_soft_bce_validation(kwargs, match: str) -> None:
    args = {"student_logits": t([[0.0, 1.0]]), "teacher_probs": t([[0.5, 0.5]])} | kwargs
    with pytest.raises(ValueError, match=match):
        soft_bce_loss(**args)


# ---- margin MSE ---------------------------------------------------------------------------------
def test_margin_mse_by_hand() -> None:
    assert close(margin_mse_loss(t([3.0]), t([1.0]), t([2.0]), t([1.0])), 1.0)
    many = margin_mse_loss(t([3.0]), t([[1.0, 3.0]]), t([2.0]), t([[1.0, 0.0]]))
    assert close(many, ((2 - 1) ** 2 + (0 - 2) ** 2) / 2)
    # Only margins matter: shifting the teacher's scores changes nothing.
    shifted = margin_mse_loss(t([3.0]), t([[1.0, 3.0]]), t([12.0]), t([[11.0, 10.0]]))
    assert close(shifted, many.item())
    masked = margin_mse_loss(
        t([3.0]), t([[1.0, 3.0]]), t([2.0]), t([[1.0, 0.0]]), mask=torch.tensor([[True, False]])
    )
    assert close(masked, 1.0)


def test_margin_mse_validation() -> None:
    with pytest.raises(ValueError, match="teacher_neg: non-finite"):
        margin_mse_loss(t([1.0]), t([0.0]), t([1.0]), t([float("nan")]))
    with pytest.raises(ValueError, match="teacher_neg: shape"):
        margin_mse_loss(t([1.0]), t([[0.0, 1.0]]), t([1.0]), t([[0.0]]))
    with pytest.raises(ValueError, match="2 rows but student_pos has 1"):
        margin_mse_loss(t([1.0]), t([0.0, 1.0]), t([1.0]), t([0.0, 1.0]))


# ---- rank distillation --------------------------------------------------------------------------
def test_rank_distill_by_hand() -> None:
    scores = t([[2.0, 0.0, -1.0]])
    loss = rank_distill_loss(scores, torch.tensor([[0, 1]]), lam=1.0)
    w0, w1 = 1.0, math.exp(-1.0)
    pos = (w0 * softplus(-2.0) + w1 * softplus(0.0)) / (w0 + w1)
    assert close(loss, pos + softplus(-1.0), 1e-6)  # column 2 is the only negative
    half = rank_distill_loss(scores, torch.tensor([[0, 1]]), lam=1.0, neg_weight=0.5)
    assert close(half, pos + 0.5 * softplus(-1.0), 1e-6)


def test_rank_distill_confidence_and_padding() -> None:
    scores = t([[2.0, 0.0, -1.0]])
    # zero confidence on rank 1 = only rank 0 counts; -1 pads the list the same way
    conf = rank_distill_loss(
        scores, torch.tensor([[0, 1]]), t([[0.8, 0.0]]), neg_idx=torch.tensor([[2]])
    )
    padded = rank_distill_loss(scores, torch.tensor([[0, -1]]), neg_idx=torch.tensor([[2]]))
    assert close(conf, softplus(-2.0) + softplus(-1.0), 1e-6)
    assert close(padded, conf.item(), 1e-6)
    # a row whose weights are all zero is skipped
    two = rank_distill_loss(
        t([[2.0, 0.0, -1.0], [5.0, 5.0, 5.0]]),
        torch.tensor([[0, -1], [1, 2]]),
        t([[1.0, 1.0], [0.0, 0.0]]),
        neg_idx=torch.tensor([[2], [0]]),
    )
    assert close(two, conf.item(), 1e-6)


def test_rank_distill_consistency_and_negative_masking() -> None:
    scores = t([[2.0, 0.0, -1.0]])
    # student's top-2 = columns {0, 1}; teacher lists [1, 2]: rank 0 is a hit, weight (1 + 1)
    loss = rank_distill_loss(scores, torch.tensor([[1, 2]]), lam=1.0, consistency=1.0)
    w0, w1 = 2.0, math.exp(-1.0)
    pos = (w0 * softplus(0.0) + w1 * softplus(1.0)) / (w0 + w1)
    assert close(loss, pos + softplus(2.0), 1e-6)
    # a sampled negative that is a teacher positive (column 1) is ignored
    masked = rank_distill_loss(scores, torch.tensor([[1, 2]]), neg_idx=torch.tensor([[0, 1, -1]]))
    w0, w1 = 1.0, math.exp(-1.0)
    pos = (w0 * softplus(0.0) + w1 * softplus(1.0)) / (w0 + w1)
    assert close(masked, pos + softplus(2.0), 1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"teacher_topk_idx": torch.tensor([[0, 3]])}, r"in \[0, 2\] or -1"),
        ({"teacher_topk_idx": t([[0.0, 1.0]])}, "int64"),
        ({"teacher_topk_idx": torch.tensor([[0, 1], [0, 1]])}, r"expected shape \[B=1, K\]"),
        ({"teacher_conf": t([[0.5, 1.2]])}, r"teacher_conf: values must lie in \[0, 1\]"),
        ({"teacher_conf": t([[0.5, float("nan")]])}, "teacher_conf: non-finite"),
        ({"teacher_conf": t([[0.5]])}, "does not match teacher_topk_idx"),
        ({"teacher_conf": t([[0.0, 0.0]])}, "zero total weight"),
        ({"lam": 0.0}, "lam=0.0"),
        ({"neg_weight": -1.0}, "neg_weight=-1.0"),
        ({"neg_idx": torch.tensor([[5]])}, "neg_idx"),
    ],
)
def test_rank_distill_validation(kwargs, match: str) -> None:
    args = {"student_scores": t([[2.0, 0.0, -1.0]]), "teacher_topk_idx": torch.tensor([[0, 1]])}
    with pytest.raises(ValueError, match=match):
        rank_distill_loss(**(args | kwargs))


# ---- embedding distillation -----------------------------------------------------------------
def test_embedding_distill_by_hand() -> None:
    teacher = t([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    student = t([[5.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # cos 1, 0, -1
    assert close(embedding_distill_loss(student, teacher), (0.0 + 1.0 + 2.0) / 3)


def test_embedding_distill_projection_module_and_weight_agree() -> None:
    torch.manual_seed(0)
    proj = nn.Linear(3, 2, bias=False)
    student, teacher = torch.randn(4, 3), torch.randn(4, 2)
    by_module = embedding_distill_loss(student, teacher, proj)
    by_weight = embedding_distill_loss(student, teacher, proj.weight)
    torch.testing.assert_close(by_module, by_weight)
    assert close(embedding_distill_loss(student, proj(student).detach() * 3.0, proj), 0.0, 1e-6)


def test_embedding_distill_validation() -> None:
    with pytest.raises(ValueError, match="3 rows but student_item_emb has 2"):
        embedding_distill_loss(torch.ones(2, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        embedding_distill_loss(torch.ones(2, 2), t([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(pass a projection\)"):
        embedding_distill_loss(torch.ones(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"weight must be \[D_t, D_s=3\]"):
        embedding_distill_loss(torch.ones(2, 3), torch.ones(2, 2), torch.ones(2, 4))


# ---- total ----------------------------------------------------------------------------------
def test_total_loss_mixes_present_terms() -> None:
    weights = DistillLossWeights(hard=1.0, listwise_kl=0.5, rank=0.0)
    hard = torch.tensor(2.0, requires_grad=True)
    total, log = total_loss({"hard": hard, "listwise_kl": t(3.0), "rank": t(10.0)}, weights)
    assert total.item() == pytest.approx(3.5)
    assert log == {"hard": 2.0, "listwise_kl": 3.0, "rank": 10.0, "total": 3.5}
    total.backward()
    assert hard.grad.item() == 1.0


def test_total_loss_validation() -> None:
    weights = DistillLossWeights()
    with pytest.raises(ValueError, match=r"unknown loss name\(s\) \['kl'\]"):
        total_loss({"kl": t(1.0)}, weights)
    with pytest.raises(ValueError, match=r"terms\['hard'\]: expected a scalar"):
        total_loss({"hard": t([1.0, 2.0])}, weights)
    with pytest.raises(ValueError, match="none of"):
        total_loss({"embed": t(1.0)}, weights)
    with pytest.raises(ValueError, match="diverged"):
        total_loss({"hard": t(float("nan"))}, weights)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hard": -1.0}, "hard=-1.0"),
        ({"rank": float("nan")}, "rank=nan"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"soft_bce": "1"}, "soft_bce='1'"),
        ({"hard": 0.0}, "every weight is 0"),
    ],
)
def test_loss_weights_validation(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DistillLossWeights(**kwargs)


def test_loss_weights_json_round_trip() -> None:
    weights = DistillLossWeights(hard=0.5, listwise_kl=1.0, temperature=2.0)
    assert DistillLossWeights.from_dict(json.loads(json.dumps(weights.to_dict()))) == weights
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['temp'\]"):
        DistillLossWeights.from_dict({"temp": 2.0})
