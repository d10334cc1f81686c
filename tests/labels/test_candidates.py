"""Candidate lists for the label job: what each training user's list holds."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from pipelines.data import SyntheticConfig, make_synthetic, training_split
from pipelines.labels.candidates import (
    CandidateConfig,
    candidate_plan,
    cooccurrence,
    iter_candidates,
    make_candidates,
)

# make_candidates before the scalable paths (commit 19f0d4d) on the ``synth`` fixture, with
# n_negatives=12, max_positives=5, seed=0: the exact path of small catalogues keeps its draws
FROZEN = {
    "uniform": "ca23154f667dde7d",
    "popularity": "ed0117e2996ae26e",
    "hard": "8570ece03979a96a",
    "mixed": "a6c7207778c17904",
}
# every scalable path, forced on the tiny catalogue
SCALABLE = dict(exact_items=1, cooc_budget=1, cooc_neighbours=5)


@pytest.fixture
def synth():
    return make_synthetic(SyntheticConfig(users=60, items=80, per_user=15, seed=1))


@pytest.mark.parametrize("strategy", ["uniform", "popularity", "hard", "mixed"])
def test_candidates_exclude_only_train_items(synth, strategy):
    s = training_split(synth, "random")
    cfg = CandidateConfig(n_negatives=12, max_positives=5, strategy=strategy, seed=0)
    c = make_candidates(s, cfg)
    train = set(zip(s.train.user, s.train.item))
    pairs = list(zip(c.user, c.item))
    assert all((p in train) == o for p, o in zip(pairs, c.observed))
    assert len(set(pairs)) == len(pairs)
    n_train = s.train.groupby("user").size().clip(upper=5)
    assert (c.groupby("user").size() == n_train + 12).all()
    pd.testing.assert_frame_equal(c, make_candidates(s, cfg))


def test_candidate_config_validation():
    with pytest.raises(ValueError, match="strategy='best'"):
        CandidateConfig(strategy="best")


def _hash(frame: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for col in ("user", "item", "observed"):
        h.update(np.ascontiguousarray(frame[col].to_numpy()).tobytes())
    h.update("|".join(frame.source).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("strategy", list(FROZEN))
def test_exact_path_keeps_the_old_draws(synth, strategy):
    s = training_split(synth, "random")
    cfg = CandidateConfig(n_negatives=12, max_positives=5, strategy=strategy, seed=0)
    assert candidate_plan(s, cfg)["sampling"] == "exact"
    assert _hash(make_candidates(s, cfg)) == FROZEN[strategy]


def _check_valid(s, c, n_neg, n_pos):
    train = set(zip(s.train.user, s.train.item))
    pairs = list(zip(c.user, c.item))
    assert all((p in train) == o for p, o in zip(pairs, c.observed))  # negatives: no train item
    assert len(set(pairs)) == len(pairs)  # no duplicate within a user
    n_train = s.train.groupby("user").size().clip(upper=n_pos)
    assert (c.groupby("user").size() == n_train + n_neg).all()
    assert (c.observed == (c.source == "positive")).all()


@pytest.mark.parametrize("strategy", ["uniform", "popularity", "hard", "mixed"])
def test_scalable_paths_give_valid_candidates(synth, strategy):
    s = training_split(synth, "random")
    cfg = CandidateConfig(n_negatives=30, max_positives=5, strategy=strategy, seed=0, **SCALABLE)
    plan = candidate_plan(s, cfg)
    assert plan["sampling"] == "scalable"
    if strategy in ("hard", "mixed"):
        assert plan["cooccurrence"] == "knn" and plan["neighbours"] == 5
    c = make_candidates(s, cfg)
    _check_valid(s, c, 30, 5)
    want = {"uniform": {"uniform"}, "popularity": {"popularity"}, "hard": {"hard"}}
    assert set(c.source[~c.observed]) == want.get(strategy, {"hard", "popularity", "uniform"})
    if strategy == "mixed":
        per_user = c[~c.observed].groupby("user").source.value_counts().unstack()
        assert (per_user["hard"] == 10).all() and (per_user["uniform"] == 10).all()
    pd.testing.assert_frame_equal(c, make_candidates(s, cfg))


def test_few_free_items_fill_the_catalogue(synth):
    """More negatives than free items: every free item is taken once, on either path."""
    s = training_split(synth, "random")
    for extra in ({}, SCALABLE):
        cfg = CandidateConfig(n_negatives=500, max_positives=5, strategy="mixed", **extra)
        c = make_candidates(s, cfg)
        neg = c[~c.observed]
        n_train = s.train.groupby("user").size()
        assert (neg.groupby("user").size() == s.n_items - n_train).all()
        assert not neg.duplicated(["user", "item"]).any()


def test_sparse_hard_negatives_are_the_top_co_occurring_items(synth):
    s = training_split(synth, "random")
    train = s.matrix("train").tocsr()
    g = (train.T @ train).toarray()
    np.fill_diagonal(g, 0)
    cfg = CandidateConfig(n_negatives=6, max_positives=0, strategy="hard", exact_items=1)
    assert candidate_plan(s, cfg)["cooccurrence"] == "exact"
    c = make_candidates(s, cfg)
    for u, rows in c.groupby("user"):
        score = g[train[u].indices].sum(0)
        free = np.setdiff1d(np.arange(s.n_items), train[u].indices)
        picked = rows.item.to_numpy()
        rest = np.setdiff1d(free, picked)
        assert score[picked].min() >= score[rest].max()
        assert (np.diff(score[picked]) <= 0).all()  # best first


def test_knn_graph_keeps_each_items_largest_co_occurrences(synth):
    s = training_split(synth, "random")
    train = s.matrix("train").tocsr()
    exact = cooccurrence(train, "exact", 0).toarray()
    knn = cooccurrence(train, "knn", 4)
    assert (knn.diagonal() == 0).all()
    for i in range(s.n_items):
        cols = knn[i].indices
        assert len(cols) <= 5
        np.testing.assert_allclose(knn[i].data, exact[i, cols])
        if len(cols):
            others = np.delete(exact[i], np.r_[cols, i])
            assert knn[i].data.min() >= others.max()


def test_popularity_rejection_follows_popularity(synth):
    s = training_split(synth, "random")
    pop = np.bincount(s.train.item, minlength=s.n_items)
    top = np.argsort(-pop)[: s.n_items // 5]
    share = {}
    for extra in ({}, SCALABLE):
        cfg = CandidateConfig(n_negatives=20, max_positives=0, strategy="popularity", **extra)
        shares = []
        for seed in range(5):
            c = make_candidates(s, CandidateConfig(**{**cfg.__dict__, "seed": seed}))
            shares.append(np.isin(c.item, top).mean())
        share[bool(extra)] = np.mean(shares)
    assert share[True] == pytest.approx(share[False], rel=0.1)
    assert share[True] > 0.2 * 1.2  # above a uniform draw's share of the top fifth


@pytest.mark.parametrize("extra", [{}, SCALABLE], ids=["exact", "scalable"])
def test_chunked_generation_equals_all_at_once(synth, extra):
    s = training_split(synth, "random")
    cfg = CandidateConfig(n_negatives=12, max_positives=5, strategy="mixed", n_cold=0, **extra)
    users = np.flatnonzero(np.bincount(s.train.user, minlength=synth.n_users))
    whole = make_candidates(s, cfg, users)
    chunks = [users[i : i + 7] for i in range(0, len(users), 7)]
    frames = list(iter_candidates(s, cfg, chunks))
    assert len(frames) == len(chunks)
    for chunk, frame in zip(chunks, frames):
        assert set(frame.user) <= set(chunk)
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), whole)
