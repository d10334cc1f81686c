"""The collaborative model chosen by size (EASE^R or ALS), ALS itself, and the content map on
ALS targets."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import pipelines.baselines.collab as collab
from pipelines.baselines.als import ALS, ALSConfig, fold_in
from pipelines.baselines.collab import CollabMemoryError, ease_bytes, fit_collab
from pipelines.baselines.content_map import ContentMap, cold_truth, fit_content_map
from pipelines.baselines.popularity import Popularity
from pipelines.core.metrics import evaluate
from pipelines.data import SyntheticConfig, make_split, make_synthetic, training_split
from pipelines.data.features import item_features


@pytest.fixture(scope="module")
def split():
    # planted low-rank structure (8 factors) plus a popularity skew
    data = make_synthetic(SyntheticConfig(users=600, items=300, per_user=30, seed=0))
    return make_split(data, "random", 0)


def test_auto_picks_ease_when_it_fits_and_als_under_a_tiny_budget(split):
    model, info = fit_collab(split, ease_lambdas=(100.0,))
    assert model.kind == info["kind"] == "ease" and info["lambda"] == 100.0
    assert info["chosen_by"].startswith("auto:") and "within" in info["chosen_by"]
    assert f"{split.n_items} items" in info["chosen_by"]
    model, info = fit_collab(split, memory_gb=1e-4)
    assert model.kind == info["kind"] == "als" and isinstance(model, ALS)
    assert "over the 0.0001 GB budget" in info["chosen_by"]
    assert info["regularization"] in collab.ALS_REGULARIZATIONS
    assert set(info["valid"]) == {str(r) for r in collab.ALS_REGULARIZATIONS}
    _, forced = fit_collab(split, "als", memory_gb=1e-4)
    assert forced["chosen_by"] == "forced: collab='als'"


def test_ease_bytes_grows_with_the_square_of_the_catalogue():
    assert ease_bytes(20_000) - ease_bytes(10_000) == pytest.approx(
        3 * (ease_bytes(10_000) - ease_bytes(0)), rel=1e-9
    )
    assert 30e9 < ease_bytes(100_000) / 10 < 40e9  # ~330 GB at 100k items
    with pytest.raises(ValueError, match="n_items=-1"):
        ease_bytes(-1)


def test_forced_ease_past_physical_memory_raises_before_allocating(split, monkeypatch):
    monkeypatch.setattr(collab, "physical_memory_bytes", lambda: 10**6)  # a 1 MB machine

    def no_fit(*a, **k):
        raise AssertionError("EASE^R was fit despite the memory check")

    monkeypatch.setattr(collab, "fit_ease", no_fit)
    with pytest.raises(CollabMemoryError, match=rf"EASE\^R on {split.n_items} items needs") as e:
        fit_collab(split, "ease")
    msg = str(e.value)
    assert "0.0 GB" in msg and "--collab als" in msg and "this machine has" in msg
    with pytest.raises(CollabMemoryError):  # a budget above the machine does not get past it
        fit_collab(split, "auto", memory_gb=1000.0)
    with pytest.raises(ValueError, match="kind='dense'"):
        fit_collab(split, "dense")


def test_physical_memory_is_read():
    assert collab.physical_memory_bytes() > 2**26


def test_als_beats_popularity_and_pairs_equal_the_matrix(split):
    model, _ = fit_collab(split, "als")
    truth, seen = split.matrix("test"), split.seen_for("test")
    als = evaluate(model, truth, seen)["ndcg@10"]
    pop = evaluate(Popularity(split.matrix("train")), truth, seen)["ndcg@10"]
    assert als > 1.8 * pop, (als, pop)
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, split.n_users, 500), rng.integers(0, split.n_items, 500)
    pairs = model.score_pairs(users, items)
    assert pairs.dtype == np.float32 and pairs.shape == (500,)
    assert np.allclose(pairs, model(users)[np.arange(500), items], rtol=1e-5, atol=1e-6)
    assert model.params == (split.n_users + split.n_items) * model.config.factors
    assert model.nbytes == 4 * model.params


def test_als_is_deterministic_for_a_seed(split):
    train = split.matrix("train")
    cfg = ALSConfig(factors=16, iterations=5, seed=3)
    a, b = ALS(train, cfg), ALS(train, cfg)
    assert np.array_equal(a.item_factors, b.item_factors)
    assert np.array_equal(a.user_factors, b.user_factors)
    one = ALS(train, ALSConfig(factors=16, iterations=5, seed=3, num_threads=1))
    two = ALS(train, ALSConfig(factors=16, iterations=5, seed=3, num_threads=2))
    assert np.array_equal(one.item_factors, two.item_factors)  # threads do not change it
    assert np.array_equal(one.user_factors, two.user_factors)
    c = ALS(train, ALSConfig(factors=16, iterations=5, seed=4))
    assert not np.array_equal(a.item_factors, c.item_factors)


def test_als_config_is_validated():
    with pytest.raises(ValueError, match=r"ALSConfig.factors=0; expected >= 1"):
        ALSConfig(factors=0)
    with pytest.raises(ValueError, match=r"ALSConfig.alpha=0.0; expected > 0"):
        ALSConfig(alpha=0.0)


def test_fold_in_equals_implicit_recalculate_user():
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(0)
    Y = rng.normal(size=(50, 8)).astype(np.float32)
    rows = (rng.random((5, 50)) < 0.2).astype(np.float32)
    rows[2] = 0  # an empty history folds in to the zero vector
    rows = sp.csr_matrix(rows)
    ref = AlternatingLeastSquares(factors=8, regularization=3.0, alpha=2.0, num_threads=1)
    ref.item_factors = Y
    want = ref.recalculate_user(np.arange(5), rows)
    got = fold_in(Y, rows, regularization=3.0, alpha=2.0)
    assert np.allclose(got, want, atol=1e-5) and not got[2].any() and got[0].any()
    with pytest.raises(ValueError, match="rows have 49 items; item_factors has 50"):
        fold_in(Y, sp.csr_matrix((1, 49)), 1.0, 1.0)


def test_content_map_on_factor_targets_recovers_a_planted_map():
    # item factors are a linear function of the features: the map must find them for cold items
    rng = np.random.default_rng(0)
    n_users, n_items, f, d = 50, 40, 6, 4
    feats = rng.normal(size=(n_items, f))
    targets = feats @ rng.normal(size=(f, d))  # [I, D]
    user_vecs = rng.normal(size=(n_users, d)).astype(np.float32)
    dense = (rng.random((n_users, n_items)) < 0.3).astype(np.float32)
    dense[:, [3, 7]] = 0
    cm = ContentMap(sp.csr_matrix(dense), targets, feats, lam=1e-6, users=user_vecs)
    assert list(cm.cold) == [3, 7]
    users = np.arange(n_users)
    want = user_vecs @ targets[[3, 7]].T
    got = cm.score_cold_matrix(users)
    assert np.allclose(got, want, atol=1e-3 * np.abs(want).max())
    pairs = cm.score_cold(users, np.where(users % 2, 3, 7))
    assert np.allclose(pairs, got[users, np.where(users % 2, 0, 1)], atol=1e-5)
    with pytest.raises(ValueError, match=r"users has shape \(50, 3\)"):
        ContentMap(sp.csr_matrix(dense), targets, feats, lam=1.0, users=user_vecs[:, :3])


def test_content_map_with_als_ranks_cold_items_better_than_random():
    # synthetic genres are each item's strongest latent factor: content predicts its factor
    data = make_synthetic(SyntheticConfig(users=500, items=400, per_user=30, seed=1))
    v = training_split(data, "cold_items", 0)
    model, _ = fit_collab(v, "als")
    cm, info = fit_content_map(v, model, item_features(data), lambdas=(1.0, 10.0))
    truth, items = cold_truth(v, "cold_valid"), v.cold_items("cold_valid")
    got = evaluate(cm, truth, None, ks=(10,), items=items)["ndcg@10"]
    rng = np.random.default_rng(0)
    rand = np.mean(
        [
            evaluate(lambda u: rng.random((len(u), v.n_items)), truth, None, (10,), items=items)[
                "ndcg@10"
            ]
            for _ in range(5)
        ]
    )
    assert got > 1.8 * rand, (got, rand)
    assert info["lambda"] in (1.0, 10.0)
