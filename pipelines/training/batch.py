"""What the objective's terms read in one training step: the run's fixed inputs, the step's
train interactions, and the soft-label lists of a sample of users scored by the student.

In data-parallel training (``Shard``) every process draws the same global step from the same
seeded generator and keeps its rows ``rank::world``; each term weights its mean by the
process's share of the rows (``Shard.share``), so the gradients DDP averages over the
processes are the one-process step's (exactly for the hard term, whose candidates stay the
global step's positives, and for the per-user means of the soft terms)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.training.soft_lists import SoftLists
from student.model import TwoTower


@dataclass(frozen=True)
class Shard:
    """This process's part of every step: process ``rank`` of ``world`` (1 of 1: all of it)."""

    rank: int = 0
    world: int = 1

    def rows(self, n: int) -> torch.Tensor:
        """The indices of this process's rows among a step's ``n``."""
        return torch.arange(self.rank, n, self.world)

    def share(self, own: int, total: int) -> float:
        """The weight of a mean over ``own`` of ``total`` rows: the processes' weighted means,
        averaged, are the mean over all rows."""
        return 1.0 if self.world == 1 else self.world * own / max(total, 1)


ONE_PROCESS = Shard()  # every row of every step


@dataclass
class ObjectiveInputs:
    """The run's inputs to the terms that stay fixed from step to step."""

    hist: torch.Tensor  # [n_users, L] every user's train history, padded with n_items
    p_data: np.ndarray  # [I] train popularity of each item (the softmax's logQ)
    p_neg: np.ndarray  # [I] distribution the shared negatives are drawn from
    lists: SoftLists | None = None  # the teacher's candidate lists (None: hard labels only)
    cold_lists: SoftLists | None = None  # the cold-item candidates only
    teacher_emb: torch.Tensor | None = None  # [I, D_t] the teacher's item embeddings
    items: np.ndarray | None = None  # the items training may sample (None: the catalogue)


@dataclass
class SoftBatch:
    """Soft-label lists of the step's sampled users, with the student's scores over them."""

    users: np.ndarray  # [Bu] sampled users (rows of ``lists``)
    items: torch.Tensor  # [Bu, L] candidates in teacher rank order
    mask: torch.Tensor  # [Bu, L] True = a real candidate, False = padding
    teacher: torch.Tensor  # [Bu, L] teacher logits
    scores: torch.Tensor  # [Bu, L] student scores
    lists: SoftLists  # the lists they come from (probs, observed)
    drawn: np.ndarray | None = None  # data-parallel: every process's users (None: ``users``)
    world: int = 1  # processes sharing the step

    @property
    def share(self) -> float:
        """The weight of this process's mean over its users (``Shard.share``)."""
        return 1.0 if self.drawn is None else self.world * len(self.users) / len(self.drawn)

    def entry_share(self, cols: slice = slice(None)) -> float:
        """The weight of this process's mean over its valid list entries in ``cols``."""
        if self.drawn is None:
            return 1.0
        total = int(self.lists.mask[self.drawn][:, cols].sum())
        return self.world * int(self.mask[:, cols].sum()) / max(total, 1)


@dataclass
class Step:
    """One training step: the model, the run's generator and inputs, the step's batch."""

    model: TwoTower
    rng: np.random.Generator  # terms draw from it in registry order
    inputs: ObjectiveInputs
    users: torch.Tensor  # [B] users of the step's train interactions (or sequences)
    history: torch.Tensor | None  # [B, L] their histories, the target item removed
    pos: torch.Tensor  # [B] the interactions' items; sequence encoders: [B, L] the item
    # after each history position (padded with n_items where none)
    neg: torch.Tensor  # [N] shared sampled negatives
    soft: SoftBatch | None = None  # set by the objective on steps with soft labels
    shard: Shard = ONE_PROCESS  # data-parallel: this process's rows of the global step
    batch_pos: torch.Tensor | None = None  # the global step's ``pos`` (None: ``pos``)
    own: torch.Tensor | None = None  # rows of ``batch_pos`` that are ``pos`` (None: all)

    def global_pos(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(the global step's pos, the indices of this process's rows in it)``."""
        if self.batch_pos is None:
            return self.pos, torch.arange(len(self.pos))
        return self.batch_pos, self.own


def score_lists(
    model: TwoTower,
    lists: SoftLists,
    hist: torch.Tensor,
    rng: np.random.Generator,
    n: int,
    shard: Shard = ONE_PROCESS,
) -> SoftBatch:
    """Sample ``min(n, users with a list)`` users and score their lists with the student
    (this process's share of them under ``shard``)."""
    drawn = rng.choice(lists.users, min(n, len(lists.users)), replace=False)
    users = drawn[shard.rank :: shard.world]
    u = torch.as_tensor(users)
    items = torch.as_tensor(lists.items[users])
    mask = torch.as_tensor(lists.mask[users])
    teacher = torch.as_tensor(lists.scores[users])
    uniq, inv = torch.unique(items, return_inverse=True)  # encode each item once per step
    scores = model.score(model.encode_users(u, hist[u]), model.encode_items(uniq)[inv])
    drawn = None if shard.world == 1 else drawn
    return SoftBatch(users, items, mask, teacher, scores, lists, drawn, shard.world)


def list_standardise(t_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Teacher logits [B, L] standardised within each user's (masked) list."""
    m = mask.float()
    n = m.sum(1, keepdim=True).clamp_min(1.0)
    mean = (t_scores * m).sum(1, keepdim=True) / n
    std = (((t_scores - mean) ** 2 * m).sum(1, keepdim=True) / n).sqrt().clamp_min(1e-6)
    return (t_scores - mean) / std
