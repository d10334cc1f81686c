from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from ranx import Qrels, Run
from ranx import evaluate as ranx_evaluate

from pipelines.baselines.ease import EASE, fit_ease
from pipelines.baselines.popularity import Popularity
from pipelines.core.metrics import (
    bootstrap_ci,
    evaluate,
    paired_bootstrap,
    per_user_metrics,
    tie_order,
    tie_ranks,
    topk,
    topk_overlap,
)
from pipelines.data import SyntheticConfig, make_split, make_synthetic


def test_hand_computed_example():
    top = np.array([[3, 1, 2, 0]])
    per = per_user_metrics(top, [np.array([1, 0])], ks=(2, 4))
    assert per["recall@2"][0] == pytest.approx(0.5)
    assert per["mrr@2"][0] == pytest.approx(0.5)
    idcg2 = 1 + 1 / np.log2(3)
    assert per["ndcg@2"][0] == pytest.approx((1 / np.log2(3)) / idcg2)
    assert per["ndcg@4"][0] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / idcg2)
    assert per["hit_rate@2"][0] == 1.0


def test_topk_excludes_and_orders():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]], dtype=np.float32)
    ex = sp.csr_matrix(np.array([[0, 1, 0, 0]]))
    assert topk(scores, 2, ex).tolist() == [[3, 2]]


@pytest.mark.parametrize("n_items", [60, 300, 20_000])  # 60: k=50 sorts whole rows
def test_topk_matches_a_full_stable_sort(n_items):
    # many ties (scores rounded to 1 decimal): best first, equal scores in the seeded tie
    # order, as a full stable sort of -score over the items in that order gives; excluded
    # items never appear; the input is kept
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(7, n_items)), 1).astype(np.float32)
    ex = sp.random(7, n_items, density=0.2, random_state=4, format="csr")
    ex = sp.lil_matrix(ex)
    ex[2, : n_items - 30] = 1  # a user with nearly everything excluded: -inf block maxima
    ex = ex.tocsr()
    before = scores.copy()
    for k in (1, 20, 50):
        top = topk(scores, k, ex)
        masked = np.where(ex.toarray() > 0, -np.inf, scores)
        perm = np.argsort(tie_ranks(n_items))  # the items in tie order
        full = perm[np.argsort(-masked[:, perm], axis=1, kind="stable")[:, :k]]
        assert top.dtype == np.int64
        assert np.array_equal(top, full), k
    assert np.array_equal(scores, before)
    # rows of a block in place (overwrite) give the same lists
    own = scores.copy()
    assert np.array_equal(topk(own, 20, ex, overwrite=True), topk(scores, 20, ex))
    # k past the row length returns the whole row
    assert topk(np.array([[0.5, 0.2, 0.9]], dtype=np.float32), 5).tolist() == [[2, 0, 1]]


@pytest.mark.parametrize("density", [0.0, 0.0005, 0.002, 0.05])
def test_topk_of_a_sparse_scorer_matches_a_full_stable_sort(density):
    # most items tie at 0 (a transition model scores a few items a row): the rows whose bound
    # is that tie take the tie-order path, with the full sort's result, excluded items (-inf)
    # and rows with fewer than k items left included
    rng = np.random.default_rng(5)
    n_items = 50_000
    dense = sp.random(6, n_items, density=density, random_state=6, format="csr", dtype=np.float32)
    scores = np.round(dense.toarray() * 4, 0).astype(np.float32)  # ties above 0 too
    scores[3, rng.choice(n_items, 40, replace=False)] = -0.5  # below the 0 tie
    ex = sp.lil_matrix((6, n_items), dtype=np.float32)
    ex[4, : n_items - 7] = 1  # 7 items left: -inf fills the list
    ex[5, rng.choice(n_items, 1000, replace=False)] = 1
    ex = ex.tocsr()
    masked = np.where(ex.toarray() > 0, -np.inf, scores)
    perm = tie_order(n_items)
    assert np.array_equal(tie_ranks(n_items)[perm], np.arange(n_items))
    for seed in (0, 1):
        perm = tie_order(n_items, seed)
        for k in (1, 20, 300):
            full = perm[np.argsort(-masked[:, perm], axis=1, kind="stable")[:, :k]]
            assert np.array_equal(topk(scores, k, ex, tie_seed=seed), full), (seed, k)


@pytest.mark.parametrize("n_items", [12, 1000])  # 12: whole rows sorted
def test_equal_scores_rank_like_random_not_by_index(n_items):
    # a scorer of all-equal scores: its top-k is a seeded draw, not the lowest indices
    flat = np.zeros((3, n_items), dtype=np.float32)
    top = topk(flat, 5)
    assert top.tolist() != [[0, 1, 2, 3, 4]] * 3
    assert (top == top[0]).all()  # one order for every user
    assert np.array_equal(np.sort(tie_ranks(n_items)), np.arange(n_items))
    assert not np.array_equal(topk(flat, 5, tie_seed=1), top)


def test_all_equal_scorer_has_the_random_expectation():
    # targets among the 100 lowest ids (a popular head, as a low index is in MovieLens):
    # index ties would score the head; the tie order scores like a random ranking
    rng = np.random.default_rng(0)
    n_users, n_items = 400, 1000
    truth = sp.csr_matrix(
        (np.ones(n_users), (np.arange(n_users), rng.integers(0, 100, n_users))),
        shape=(n_users, n_items),
    )
    flat = np.zeros((n_users, n_items), dtype=np.float32)
    rel = [np.asarray(r) for r in truth.tolil().rows]
    by_index = per_user_metrics(np.tile(np.arange(10), (n_users, 1)), rel, ks=(10,))
    ndcg = [evaluate(lambda u: flat[u], truth, None, tie_seed=t)["ndcg@10"] for t in range(20)]
    expected = (1 / np.log2(np.arange(2, 12))).sum() / n_items  # one target among n_items
    assert by_index["ndcg@10"].mean() > 5 * expected
    assert np.mean(ndcg) == pytest.approx(expected, rel=0.5)
    assert max(ndcg) < by_index["ndcg@10"].mean()


def test_tie_free_scores_do_not_depend_on_the_tie_seed():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 300)).astype(np.float32)
    truth = sp.random(50, 300, density=0.05, random_state=2, format="csr")
    a = evaluate(lambda u: scores[u], truth, None, tie_seed=0, return_topk=True)
    b = evaluate(lambda u: scores[u], truth, None, tie_seed=7, return_topk=True)
    assert np.array_equal(a["topk"], b["topk"]) and a["ndcg@10"] == b["ndcg@10"]


def test_metrics_agree_with_ranx():
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 60
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    truth = sp.random(n_users, n_items, density=0.08, random_state=1, format="csr")
    truth.data[:] = 1
    truth = truth + sp.csr_matrix(
        (np.ones(n_users), (np.arange(n_users), np.arange(n_users))), shape=truth.shape
    )
    truth.data[:] = 1
    ours = evaluate(lambda u: scores[u], truth.tocsr(), None, ks=(10, 20))
    qrels = {f"u{u}": {f"i{i}": 1 for i in truth[u].indices} for u in range(n_users)}
    run = {f"u{u}": {f"i{i}": float(scores[u, i]) for i in range(n_items)} for u in range(n_users)}
    names = {
        "ndcg@10": "ndcg@10",
        "recall@10": "recall@10",
        "mrr@10": "mrr@10",
        "hit_rate@10": "hit_rate@10",
        "ndcg@20": "ndcg@20",
        "recall@20": "recall@20",
    }
    theirs = ranx_evaluate(Qrels(qrels), Run(run), list(names.values()))
    for ours_name, ranx_name in names.items():
        assert ours[ours_name] == pytest.approx(theirs[ranx_name], abs=1e-6), ours_name


def test_evaluate_rejects_bad_scores():
    truth = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda u: np.zeros((len(u), 2)), truth, None)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda u: np.full((len(u), 3), np.nan), truth, None)


def test_bootstrap_and_overlap():
    v = np.r_[np.zeros(50), np.ones(50)]
    mean, lo, hi = bootstrap_ci(v, n=500)
    assert mean == 0.5 and lo < 0.5 < hi
    d, lo, hi = paired_bootstrap(v + 0.1, v)
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    assert topk_overlap(np.array([[1, 2], [3, 4]]), np.array([[2, 9], [3, 4]])) == 0.75


def test_ease_beats_popularity_on_planted_structure():
    data = make_synthetic(SyntheticConfig(users=200, items=150, per_user=20, seed=0))
    split = make_split(data, "random")
    truth, ex = split.matrix("test"), split.seen_for("test")
    ease, info = fit_ease(split, lambdas=(10.0, 100.0))
    pop = evaluate(Popularity(split.matrix("train")), truth, ex)
    got = evaluate(ease, truth, ex)
    assert got["ndcg@10"] > pop["ndcg@10"]
    assert info["lambda"] in (10.0, 100.0)
    with pytest.raises(ValueError, match="lambda"):
        EASE(split.matrix("train"), lam=0)


def test_seen_items_never_ranked():
    data = make_synthetic(SyntheticConfig(users=30, items=120, per_user=10))
    split = make_split(data, "random")
    ex = split.seen_for("test")
    out = evaluate(Popularity(split.matrix("train")), split.matrix("test"), ex, return_topk=True)
    for u, row in zip(np.flatnonzero(np.diff(split.matrix("test").indptr)), out["topk"]):
        assert not set(row) & set(ex[u].indices)
