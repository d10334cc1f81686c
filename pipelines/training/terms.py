"""The objective's terms: one class per term, each joining the student's forward pass to one
pure loss of ``student.losses``, registered under its ``DistillLossWeights`` field.

A term is built once by ``from_config(weights, settings)`` and called on every ``Step``.
``TERMS`` is in registration order, which is the order the terms run (they draw from the
run's generator in turn) and are summed: append a new term at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import numpy as np
import torch
from torch import nn

from pipelines.training.batch import SoftBatch, Step, list_standardise, score_lists
from student.losses import (
    DistillLossWeights,
    accidental_hit_mask,
    bpr_loss,
    embedding_distill_loss,
    listwise_kl_loss,
    margin_mse_loss,
    pair_importance,
    rank_distill_loss,
    sampled_softmax_loss,
    soft_bce_loss,
)

HardLoss = Literal["softmax", "bpr"]
HARD_LOSSES: tuple[str, ...] = get_args(HardLoss)
TeacherNorm = Literal["none", "list"]


@dataclass(frozen=True)
class TermSettings:
    """What the terms need besides ``DistillLossWeights``."""

    hard_loss: HardLoss = "softmax"  # sampled softmax with logQ, or BPR
    n_negatives: int = 512  # shared sampled negatives per step
    teacher_norm: TeacherNorm = "list"  # teacher logits as stored, or standardised per list
    rank_k: int = 10  # teacher top-K of rank distillation
    soft_users: int = 128  # users whose lists enter each step's soft terms
    out_dim: int = 64  # the student's embedding size
    teacher_dim: int = 0  # the teacher's item embedding size (0 = none)
    teacher_confidence: bool = False  # DLLM2Rec-style importance weights of the teacher's pairs


class Term:
    """One weighted term of the objective: ``term(step) -> scalar loss``."""

    name: ClassVar[str]  # its DistillLossWeights field and key in the loss log
    needs_labels: ClassVar[bool] = True  # runs only on steps with soft labels, after scoring
    always: ClassVar[bool] = False  # built (and logged) even at weight 0

    @classmethod
    def from_config(cls, weights: DistillLossWeights, settings: TermSettings) -> Term:
        return cls()

    def parameters(self) -> list[nn.Parameter]:
        """Trainable weights the term owns (stepped with the student's)."""
        return []

    def __call__(self, step: Step) -> torch.Tensor:
        raise NotImplementedError


TERMS: dict[str, type[Term]] = {}


def register(cls: type[Term]) -> type[Term]:
    if cls.name in TERMS:
        raise ValueError(f"objective term {cls.name!r} is registered twice")
    TERMS[cls.name] = cls
    return cls


@register
class HardTerm(Term):
    """Ground truth: sampled softmax over in-batch positives + shared negatives (logQ), or BPR.

    Rows: the step's interactions (mean tower), or every real history position of the step's
    users with its next item as the positive (sequence encoders; see ``loop.py``)."""

    name = "hard"
    needs_labels = False
    always = True

    def __init__(self, kind: HardLoss = "softmax", n_negatives: int = 512) -> None:
        losses = {"softmax": self._softmax, "bpr": self._bpr}
        if kind not in losses:
            raise ValueError(f"hard_loss={kind!r}; expected one of {HARD_LOSSES}")
        self.loss, self.n_negatives = losses[kind], n_negatives

    @classmethod
    def from_config(cls, weights: DistillLossWeights, settings: TermSettings) -> HardTerm:
        return cls(settings.hard_loss, settings.n_negatives)

    def __call__(self, step: Step) -> torch.Tensor:
        model = step.model
        batch_pos, own = step.global_pos()  # the candidates: every positive of the global step
        if step.pos.dim() == 1:  # one interaction a row
            user_emb, pos, cand = model.encode_users(step.users, step.history), step.pos, batch_pos
        else:
            # a sequence step: every history position predicts its next item (pos [B, L],
            # padded where a position has none); the rows are the real positions
            every = model.encode_users_every(step.users, step.history)  # [B, L, D]
            width, pad = every.shape[1], model.config.n_items
            pos = step.pos[:, :width]
            real = pos != pad
            user_emb, pos = every[real], pos[real]
            g = batch_pos[:, :width]
            g_real = g != pad
            at = torch.full(g.shape, -1, dtype=torch.long)  # each real position's candidate
            at[g_real] = torch.arange(int(g_real.sum()))
            cand, own = g[g_real], at[own][real]
        return self.loss(step, user_emb, pos, cand, own) * step.shard.share(len(pos), len(cand))

    def _bpr(self, step: Step, user_emb, pos, cand, own) -> torch.Tensor:
        # every row against all N shared negatives (any N >= 1), accidental hits masked
        model, neg = step.model, step.neg
        s_pos = model.score(user_emb, model.encode_items(pos)[:, None, :])[:, 0]
        s_neg = model.score(user_emb, model.encode_items(neg))  # [B, N]
        valid = accidental_hit_mask(pos, neg)
        return bpr_loss(s_pos, s_neg, mask=valid if valid.any() else None)

    def _softmax(self, step: Step, user_emb, pos, batch_pos, own) -> torch.Tensor:
        """Rows ``user_emb``/``pos`` against the global step's positives ``batch_pos`` (row
        ``b``'s own at ``own[b]``) and the shared negatives."""
        model, p_data, p_neg = step.model, step.inputs.p_data, step.inputs.p_neg
        cand = torch.cat([batch_pos, step.neg])
        scores = model.score(user_emb, model.encode_items(cand))  # [b, B + N]
        B = len(batch_pos)
        # logQ: expected count of each item in the step's candidate set (in-batch + sampled)
        c = cand.numpy()
        q = torch.as_tensor(
            np.log(B * p_data[c] + self.n_negatives * p_neg[c]), dtype=torch.float32
        )
        s_pos = scores[torch.arange(len(pos)), own]
        mask = accidental_hit_mask(pos, cand)
        return sampled_softmax_loss(s_pos, scores, log_q_pos=q[own], log_q_neg=q, neg_mask=mask)


@register
class ListwiseKLTerm(Term):
    """Listwise KL at temperature T to the teacher's scores over each sampled user's list."""

    name = "listwise_kl"

    def __init__(self, temperature: float = 1.0, teacher_norm: TeacherNorm = "list") -> None:
        self.temperature, self.teacher_norm = temperature, teacher_norm

    @classmethod
    def from_config(cls, weights: DistillLossWeights, settings: TermSettings) -> ListwiseKLTerm:
        return cls(weights.temperature, settings.teacher_norm)

    def __call__(self, step: Step) -> torch.Tensor:
        return self.kl(step.soft)

    def kl(self, b: SoftBatch) -> torch.Tensor:
        t = list_standardise(b.teacher, b.mask) if self.teacher_norm == "list" else b.teacher
        return listwise_kl_loss(b.scores, t, self.temperature, mask=b.mask) * b.share


@register
class SoftBCETerm(Term):
    """Pointwise BCE against the teacher's probabilities."""

    name = "soft_bce"

    def __init__(self, teacher_norm: TeacherNorm = "list") -> None:
        self.teacher_norm = teacher_norm

    @classmethod
    def from_config(cls, weights: DistillLossWeights, settings: TermSettings) -> SoftBCETerm:
        return cls(settings.teacher_norm)

    def __call__(self, step: Step) -> torch.Tensor:
        # The stored prob is Platt-calibrated on validation pairs (a user's validation
        # positives against eval_negatives sampled negatives), so its level follows that
        # sampling ratio, not P(like); another ratio adds a constant to every teacher logit.
        # teacher_norm="list" therefore centres the logits within each list (over its valid
        # entries) before the sigmoid: the target keeps the teacher's calibrated slope and
        # within-list differences and is exactly invariant to such a shift. "none" uses the
        # stored prob.
        b = step.soft
        if self.teacher_norm == "list":
            m = b.mask.float()
            mean = (b.teacher * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
            target = torch.sigmoid(b.teacher - mean) * m
        else:
            target = torch.as_tensor(b.lists.probs[b.users])
        return soft_bce_loss(b.scores, target, mask=b.mask) * b.entry_share()


@register
class MarginMSETerm(Term):
    """Margin-MSE: the teacher-best candidate against the rest of each list."""

    name = "margin_mse"

    def __init__(self, confidence: bool = False, rank_k: int = 10) -> None:
        self.confidence, self.rank_k = confidence, rank_k

    @classmethod
    def from_config(cls, weights: DistillLossWeights, settings: TermSettings) -> MarginMSETerm:
        return cls(settings.teacher_confidence, settings.rank_k)

    def __call__(self, step: Step) -> torch.Tensor:
        # column 0 is the teacher's best: lists are sorted by teacher rank
        s, t, mask = step.soft.scores, step.soft.teacher, step.soft.mask
        w = None
        if self.confidence:  # position decay over the teacher's top-K, its margin, agreement
            w = pair_importance(s[:, 0], s[:, 1:], t[:, 0], t[:, 1:], mask[:, 1:], self.rank_k)
        loss = margin_mse_loss(s[:, 0], s[:, 1:], t[:, 0], t[:, 1:], mask=mask[:, 1:], weight=w)
        return loss * step.soft.entry_share(slice(1, None))  # exact unless weighted


@register
class RankTerm(Term):
    """Rank distillation (DLLM2Rec) from each list's teacher top-K."""

    name = "rank"

    def __init__(self, rank_k: int = 10, confidence: bool = False) -> None:
        self.rank_k = rank_k
        self.consistency = 1.0 if confidence else 0.0  # DLLM2Rec's consistency-aware weight

    @classmethod
    def from_config(cls, weights: DistillLossWeights, settings: TermSettings) -> RankTerm:
        return cls(settings.rank_k, settings.teacher_confidence)

    def __call__(self, step: Step) -> torch.Tensor:
        b = step.soft
        n, length = b.items.shape
        k = min(self.rank_k, length)
        top = torch.arange(k).expand(n, k).clone()
        top[~b.mask[:, :k]] = -1
        conf = torch.as_tensor(b.lists.probs[b.users][:, :k])
        # negatives: the rest of the list, minus padded slots and the user's observed train
        # positives (DLLM2Rec samples negatives among items the user did not interact with)
        rest = torch.arange(k, length).expand(n, -1).clone()
        rest[~(b.mask[:, k:] & ~torch.as_tensor(b.lists.observed[b.users][:, k:]))] = -1
        loss = rank_distill_loss(b.scores, top, conf, neg_idx=rest, consistency=self.consistency)
        return loss * b.share


@register
class EmbedTerm(Term):
    """Embedding distillation: a sample of the student's item embeddings, projected by a
    trained Linear, against the teacher's."""

    name = "embed"
    sample = 1024  # items per step

    def __init__(self, out_dim: int, teacher_dim: int) -> None:
        if teacher_dim < 1:
            raise ValueError("embed: needs the teacher's item embeddings (teacher_dim >= 1)")
        self.proj = nn.Linear(out_dim, teacher_dim)

    @classmethod
    def from_config(cls, weights: DistillLossWeights, settings: TermSettings) -> EmbedTerm:
        return cls(settings.out_dim, settings.teacher_dim)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.proj.parameters())

    def __call__(self, step: Step) -> torch.Tensor:
        pool = step.inputs.items
        n = step.model.config.n_items if pool is None else len(pool)
        idx = torch.as_tensor(step.rng.choice(n if pool is None else pool, min(self.sample, n),
                                              replace=False))  # fmt: skip
        teacher = step.inputs.teacher_emb[idx]
        vectors = step.model.encode_items(idx)[:, : step.model.config.out_dim]  # not the bias
        return embedding_distill_loss(vectors, teacher, self.proj)


@register
class ColdKLTerm(ListwiseKLTerm):
    """Listwise KL over each sampled user's cold-item candidates only: how the teacher ranks
    the items no interaction touched, among themselves (the cold segment's task)."""

    name = "cold_kl"

    def __init__(self, temperature: float = 1.0, teacher_norm: TeacherNorm = "list",
                 soft_users: int = 128) -> None:  # fmt: skip
        super().__init__(temperature, teacher_norm)
        self.soft_users = soft_users

    @classmethod
    def from_config(cls, weights: DistillLossWeights, settings: TermSettings) -> ColdKLTerm:
        return cls(weights.temperature, settings.teacher_norm, settings.soft_users)

    def __call__(self, step: Step) -> torch.Tensor:
        cold = step.inputs.cold_lists
        if cold is None:
            raise ValueError("cold_kl: needs the cold-item candidate lists (ObjectiveInputs)")
        return self.kl(
            score_lists(step.model, cold, step.inputs.hist, step.rng, self.soft_users, step.shard)
        )
