"""What the objective's terms read in one training step: the run's fixed inputs, the step's
train interactions, and the soft-label lists of a sample of users scored by the student."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.training.soft_lists import SoftLists
from student.model import TwoTower


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


def score_lists(
    model: TwoTower, lists: SoftLists, hist: torch.Tensor, rng: np.random.Generator, n: int
) -> SoftBatch:
    """Sample ``min(n, users with a list)`` users and score their lists with the student."""
    users = rng.choice(lists.users, min(n, len(lists.users)), replace=False)
    u = torch.as_tensor(users)
    items = torch.as_tensor(lists.items[users])
    mask = torch.as_tensor(lists.mask[users])
    teacher = torch.as_tensor(lists.scores[users])
    uniq, inv = torch.unique(items, return_inverse=True)  # encode each item once per step
    scores = model.score(model.encode_users(u, hist[u]), model.encode_items(uniq)[inv])
    return SoftBatch(users, items, mask, teacher, scores, lists)


def list_standardise(t_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Teacher logits [B, L] standardised within each user's (masked) list."""
    m = mask.float()
    n = m.sum(1, keepdim=True).clamp_min(1.0)
    mean = (t_scores * m).sum(1, keepdim=True) / n
    std = (((t_scores - mean) ** 2 * m).sum(1, keepdim=True) / n).sqrt().clamp_min(1e-6)
    return (t_scores - mean) / std
