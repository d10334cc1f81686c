"""The cold benchmark's reference scorers when the collaborative model is ALS."""

from __future__ import annotations

import numpy as np

import pipelines.baselines.collab as collab
from pipelines.baselines.popularity import Popularity
from pipelines.core.metrics import evaluate
from pipelines.data import SyntheticConfig, make_split, make_synthetic
from pipelines.evaluation.cold import reference_scorers
from pipelines.evaluation.segments import cold_segments


def test_reference_scorers_with_als_score_new_users_by_fold_in(monkeypatch):
    data = make_synthetic(SyntheticConfig(users=500, items=300, per_user=30, seed=3))
    split = make_split(data, "cold_items", 0)
    fit = collab.fit_collab
    as_past_budget = lambda s, **kw: fit(s, "als", **kw)  # noqa: E731
    monkeypatch.setattr(collab, "fit_collab", as_past_budget)
    scorers = {s.name: s for s in reference_scorers(split, data, None)}
    assert "als" in scorers and "ease" not in scorers
    als = scorers["als"].fn
    assert "cold_items" not in scorers["als"].can
    cm = scorers["content_map_no_text"].fn
    users = np.arange(split.n_users)
    s, c = als(users), cm(users)
    cold = np.r_[split.cold_valid_items, split.cold_test_items]
    warm = np.setdiff1d(np.arange(split.n_items), cold)
    assert np.array_equal(s[:, warm], c[:, warm])  # warm items: the ALS scores themselves
    assert np.isfinite(c[:, cold]).all() and c[:, cold].std() > 0
    # a new user (no train row) is scored from their query-time history, better than popularity
    task = {seg.name: seg for seg in cold_segments(split, 0, 0)}["new_users"]
    got = evaluate(als, task.truth, task.exclude, ks=(10,), items=task.items)
    pop = evaluate(Popularity(split.matrix("train")), task.truth, task.exclude, ks=(10,),
                   items=task.items)  # fmt: skip
    assert got["users"] > 0 and got["ndcg@10"] > 1.15 * pop["ndcg@10"], (got, pop)
