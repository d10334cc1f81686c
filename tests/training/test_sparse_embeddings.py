"""Sparse id-table gradients (SparseAdam) against dense AdamW, and the auto choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.core.config import make_config
from pipelines.training.batch import ObjectiveInputs, Step
from pipelines.training.optim import make_optimizer
from pipelines.training.terms import HardTerm, TermSettings
from pipelines.training.train_student import (
    SPARSE_AUTO_ROWS,
    TrainStudentConfig,
    use_sparse,
)
from student.losses import DistillLossWeights
from student.model import TwoTower, TwoTowerConfig

N_USERS, N_ITEMS = 30, 40


def model() -> TwoTower:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(
        n_users=N_USERS, n_items=N_ITEMS, id_dim=8, history_len=5, user_hidden=(16,),
        item_hidden=(16,), out_dim=8, dropout=0.0,
    )  # fmt: skip
    return TwoTower(cfg)


def steps(sparse: bool, n: int) -> tuple[list[torch.Tensor], list[set[int]], TwoTower]:
    """The user table after each of ``n`` steps (index 0: before), each step's users, and
    the model."""
    m = model()
    opt = make_optimizer(m, list(m.parameters()), 1e-2, 0.0, sparse)
    hard = HardTerm.from_config(DistillLossWeights(), TermSettings(n_negatives=6))
    rng = np.random.default_rng(0)
    p = np.full(N_ITEMS, 1.0 / N_ITEMS)
    hist = torch.as_tensor(rng.integers(0, N_ITEMS + 1, (N_USERS, 5)))
    snaps, batches = [m.user_id_emb.weight.detach().clone()], []
    for _ in range(n):
        u = torch.as_tensor(rng.choice(N_USERS, 8, replace=False))
        batches.append(set(u.tolist()))
        pos = torch.as_tensor(rng.choice(N_ITEMS, 8, replace=False))
        neg = torch.as_tensor(rng.integers(0, N_ITEMS, 6))
        loss = hard(Step(m, rng, ObjectiveInputs(hist, p, p), u, hist[u], pos, neg))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        snaps.append(m.user_id_emb.weight.detach().clone())
    return snaps, batches, m


def moved_rows(a: torch.Tensor, b: torch.Tensor) -> set[int]:
    return set(np.flatnonzero((a != b).any(1).numpy()).tolist())


def test_sparse_tables_move_only_the_rows_each_step_touched():
    snaps, batches, m = steps(True, 3)
    assert m.item_id_emb.sparse and m.history_emb.sparse and m.user_id_emb.sparse
    for k, users in enumerate(batches):
        assert moved_rows(snaps[k], snaps[k + 1]) == users
    # dense AdamW keeps moving a row touched earlier (its momentum), sparse does not
    snaps, batches, _ = steps(False, 3)
    assert moved_rows(snaps[2], snaps[3]) == batches[0] | batches[1] | batches[2]
    assert batches[0] - batches[2]  # the seed draws a row of step 1 that step 3 leaves out


def test_same_gradients_so_the_dense_layers_step_alike():
    *_, dense = steps(False, 1)
    *_, sparse = steps(True, 1)
    for name in ("user_mlp", "item_mlp"):
        for a, b in zip(getattr(dense, name).parameters(), getattr(sparse, name).parameters()):
            assert torch.allclose(a, b, atol=1e-6), name
    # the tables step in the same direction (SparseAdam's eps differs slightly)
    base = model()
    for t in ("user_id_emb", "history_emb", "item_id_emb"):
        du = getattr(dense, t).weight - getattr(base, t).weight
        su = getattr(sparse, t).weight - getattr(base, t).weight
        big = du.abs() > 1e-3
        assert big.any() and (torch.sign(du[big]) == torch.sign(su[big])).all(), t


def test_auto_turns_on_for_large_tables_without_weight_decay():
    c = make_config(TrainStudentConfig, no_teacher=True)
    assert not use_sparse(c, 943, 1682)
    assert use_sparse(c, SPARSE_AUTO_ROWS, 1)
    assert not use_sparse(
        make_config(TrainStudentConfig, no_teacher=True, weight_decay=0.01), 10**6, 10**6
    )
    assert use_sparse(
        make_config(TrainStudentConfig, no_teacher=True, sparse_embeddings="on"), 5, 5
    )
    assert not use_sparse(
        make_config(TrainStudentConfig, no_teacher=True, sparse_embeddings="off"), 10**6, 1
    )


def test_sparse_on_with_weight_decay_is_refused():
    with pytest.raises(ValueError, match="SparseAdam has no weight decay"):
        make_config(TrainStudentConfig, no_teacher=True, sparse_embeddings="on", weight_decay=0.1)
