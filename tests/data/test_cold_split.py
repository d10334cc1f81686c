"""The cold_items protocol: its invariants, and the content map that scores cold items."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pipelines.baselines.content_map import ContentMap, cold_truth, fit_content_map
from pipelines.baselines.ease import EASE
from pipelines.data import LeakError, load_dataset, make_split, training_split

DATASET = "synthetic:users=80,items=100,per_user=15,seed=5"


@pytest.fixture(scope="module")
def data():
    return load_dataset(DATASET)


@pytest.mark.parametrize("seed", [0, 1])
def test_cold_split_invariants(data, seed):
    s = make_split(data, "cold_items", seed)
    cv, ct = set(s.cold_valid_items), set(s.cold_test_items)
    assert len(cv) + len(ct) == round(0.2 * data.n_items)
    assert not cv & ct and abs(len(cv) - len(ct)) <= 1  # 50/50, disjoint by item
    cold = cv | ct
    for part in ("train", "valid", "test"):  # no cold-item interaction in the warm parts
        assert not set(s.part(part)["item"]) & cold, part
    assert set(s.cold_valid["item"]) <= cv and set(s.cold_test["item"]) <= ct
    # new users: 10% of the eligible users, no interaction of theirs in any other part
    new = set(s.new_users)
    inter = data.interactions
    warm_counts = inter[~inter["item"].isin(cold)].groupby("user").size()
    assert len(new) == round(0.1 * int((warm_counts > 5).sum())) and len(new) > 0
    for part in ("train", "valid", "test", "cold_valid", "cold_test"):
        assert not set(s.part(part)["user"]) & new, part
    hist, tgt = s.part("new_history"), s.part("new_test")
    assert set(hist["user"]) == set(tgt["user"]) == new
    assert (hist.groupby("user").size() == 5).all()
    assert not (set(hist["item"]) | set(tgt["item"])) & cold  # warm items only
    for u in s.new_users:  # the history is each new user's first 5 warm interactions by time
        mine = data.interactions[data.interactions["user"] == u]
        mine = mine[~mine["item"].isin(cold)]
        assert list(hist[hist["user"] == u]["item"]) == list(mine["item"][:5])
        assert list(tgt[tgt["user"] == u]["item"]) == list(mine["item"][5:])
    # every interaction lands in exactly one part (the new users' cold-item ones are dropped)
    parts = ("train", "valid", "test", "cold_valid", "cold_test", "new_history", "new_test")
    n = sum(len(s.part(p)) for p in parts)
    dropped = int((inter["user"].isin(new) & inter["item"].isin(cold)).sum())
    assert n + dropped == len(inter)
    # the same seed gives the same split; another seed other cold items
    assert s.fingerprint() == make_split(data, "cold_items", seed).fingerprint()
    assert set(make_split(data, "cold_items", seed + 7).cold_test_items) != ct


def test_training_view_has_no_cold_test(data):
    v = training_split(data, "cold_items", 0)
    with pytest.raises(LeakError):
        v.matrix("cold_test")
    with pytest.raises(LeakError):
        v.cold_items("cold_test")
    for part in ("new_history", "new_test"):  # new users come at query time, not in training
        with pytest.raises(LeakError):
            v.part(part)
    assert v.new_users is None
    assert len(v.cold_items("cold_valid")) > 0  # cold-validation is for model selection
    with pytest.raises(ValueError, match="only under protocol 'cold_items'"):
        training_split(data, "random", 0).matrix("cold_valid")


def test_content_map_recovers_a_planted_map():
    # item columns of B are a linear function of the features: the map must find it
    rng = np.random.default_rng(0)
    n_users, n_items, f = 50, 40, 6
    feats = rng.normal(size=(n_items, f))
    W = rng.normal(size=(f, n_items))
    B = (feats @ W).T  # B[:, j] = (feats[j] @ W)
    dense = (rng.random((n_users, n_items)) < 0.3).astype(np.float32)
    dense[:, [3, 7]] = 0  # two cold items
    train = sp.csr_matrix(dense)
    cm = ContentMap(train, B.T, feats, lam=1e-6)  # targets [I, D]: EASE^R passes B.T
    assert list(cm.cold) == [3, 7]
    users = np.arange(n_users)
    want = np.asarray(train @ B[:, [3, 7]])
    assert np.allclose(cm.score_cold_matrix(users), want, atol=1e-3 * np.abs(want).max())
    with pytest.raises(ValueError, match="train interactions"):
        cm.score_cold(users[:1], np.array([0]))


def test_fit_content_map_selects_on_cold_validation_only(data):
    v = training_split(data, "cold_items", 0)
    ease = EASE(v.matrix("train"), 100.0)
    feats = np.random.default_rng(0).normal(size=(data.n_items, 5))
    cm, info = fit_content_map(v, ease.B, feats, lambdas=(1.0, 10.0))
    assert info["lambda"] in (1.0, 10.0) and set(info["cold_valid"]) == {"1.0", "10.0"}
    # the cold item's score comes from content and the user's warm train row only
    assert set(cm.cold) >= set(v.cold_valid_items)
    truth = cold_truth(v, "cold_valid")
    assert truth.nnz > 0 and set(truth.indices) <= set(v.cold_valid_items)
