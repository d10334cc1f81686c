"""Every registered objective term builds from the loss weights and gives a finite loss on a
tiny student with random labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.training.batch import ObjectiveInputs, Step
from pipelines.training.objective import Objective, build_terms
from pipelines.training.soft_lists import SoftLists
from pipelines.training.terms import HARD_LOSSES, TERMS, TermSettings
from student.losses import TERM_NAMES, DistillLossWeights
from student.model import TwoTower, TwoTowerConfig

N_USERS, N_ITEMS, L, D_T = 12, 20, 6, 5


def random_lists(rng: np.random.Generator) -> SoftLists:
    shape = (N_USERS, L)
    mask = np.ones(shape, bool)
    mask[::3, -2:] = False  # some short lists
    scores = rng.normal(size=shape).astype(np.float32)
    return SoftLists(
        items=np.stack([rng.choice(N_ITEMS, L, replace=False) for _ in range(N_USERS)]),
        scores=scores,
        probs=(1 / (1 + np.exp(-scores))).astype(np.float32) * mask,
        observed=rng.random(shape) < 0.2,
        mask=mask,
        users=np.arange(N_USERS),
        item_embeddings=rng.normal(size=(N_ITEMS, D_T)).astype(np.float32),
    )


def step(rng: np.random.Generator) -> Step:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(n_users=N_USERS, n_items=N_ITEMS, id_dim=8, history_len=4,
                         user_hidden=(8,), item_hidden=(8,), out_dim=8)  # fmt: skip
    model = TwoTower(cfg).train()
    hist = torch.as_tensor(rng.integers(0, N_ITEMS + 1, (N_USERS, 4)))
    p = np.full(N_ITEMS, 1.0 / N_ITEMS)
    lists = random_lists(rng)
    inputs = ObjectiveInputs(hist, p, p, lists, random_lists(rng), torch.randn(N_ITEMS, D_T))
    u = torch.as_tensor(rng.choice(N_USERS, 5, replace=False))
    pos = torch.as_tensor(rng.choice(N_ITEMS, 5, replace=False))
    neg = torch.as_tensor(rng.integers(0, N_ITEMS, 7))
    return Step(model, rng, inputs, u, hist[u], pos, neg)


def test_the_registry_names_the_weights() -> None:
    assert set(TERMS) == set(TERM_NAMES)
    assert all(cls.name == name for name, cls in TERMS.items())


@pytest.mark.parametrize("hard_loss", HARD_LOSSES)
@pytest.mark.parametrize("name", list(TERMS))
def test_every_term_builds_and_gives_a_finite_loss(name: str, hard_loss: str) -> None:
    weights = DistillLossWeights(**{"hard": 0.0, name: 1.0})
    settings = TermSettings(hard_loss=hard_loss, n_negatives=7, soft_users=4, rank_k=3,
                            out_dim=8, teacher_dim=D_T)  # fmt: skip
    objective = Objective(weights, settings)
    names = [t.name for t in objective.terms]
    assert names == (["hard"] if name == "hard" else ["hard", name])  # hard: always logged
    s = step(np.random.default_rng(0))
    loss, log = objective(s)
    assert loss.dim() == 0 and torch.isfinite(loss) and set(log) == {*names, "total"}
    loss.backward()
    params = [p for p in list(s.model.parameters()) + objective.parameters() if p.grad is not None]
    assert params and all(torch.isfinite(p.grad).all() for p in params)


def test_terms_are_built_in_registry_order() -> None:
    weights = DistillLossWeights(**{name: 1.0 for name in TERM_NAMES})
    terms = build_terms(weights, TermSettings(teacher_dim=D_T))
    assert [t.name for t in terms] == list(TERMS)
    assert list(TERMS)[0] == "hard"


def test_a_bad_hard_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="hard_loss='hinge'"):
        build_terms(DistillLossWeights(), TermSettings(hard_loss="hinge"))
    with pytest.raises(ValueError, match="teacher_dim"):
        build_terms(DistillLossWeights(embed=1.0), TermSettings(teacher_dim=0))
