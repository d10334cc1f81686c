"""At test time a model reads all that precedes the target: train + validation
(``Split.known_before("test")``); fits and validation read train only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.data import histories, load_dataset, make_split, to_csr
from pipelines.evaluation import benchmark as bench
from pipelines.evaluation import students
from pipelines.evaluation.segments import make_segments
from pipelines.evaluation.students import student_scorers
from student.model import TwoTower, TwoTowerConfig
from student.scoring import score_fn

DATASET = "synthetic:users=40,items=150,per_user=10,seed=2"


@pytest.fixture(scope="module")
def temporal():
    data = load_dataset(DATASET)
    return data, make_split(data, "temporal", 0)


def _history_student(data) -> TwoTower:
    """A student whose user vector is its history alone (no id)."""
    c = TwoTowerConfig(n_users=data.n_users, n_items=data.n_items, id_dim=8, history_len=4,
                       use_user_id=False, user_hidden=(), item_hidden=(), out_dim=8)  # fmt: skip
    torch.manual_seed(0)
    return TwoTower(c).eval()


def _valid_pairs(split) -> set[tuple[int, int]]:
    return set(zip(split.valid["user"].tolist(), split.valid["item"].tolist()))


def test_known_before_test_holds_each_users_validation_item_last(temporal):
    data, split = temporal
    h = histories(split.known_before("test"), data.n_users, 4, data.n_items)
    users, items = split.valid["user"].to_numpy(), split.valid["item"].to_numpy()
    assert len(users) and (h[users, 0] == items).all()  # the most recent known item


def test_benchmark_students_score_test_from_train_and_validation(temporal, monkeypatch):
    data, split = temporal
    model = _history_student(data)
    seen = []
    real = students.histories
    monkeypatch.setattr(students, "histories", lambda f, *a: seen.append(f) or real(f, *a))
    segments = make_segments(split, 0, 0)
    (s,) = student_scorers({"student_distilled": model}, set(), data, split, segments)
    assert _valid_pairs(split) <= set(zip(seen[0]["user"].tolist(), seen[0]["item"].tolist()))
    users = split.valid["user"].to_numpy().copy()
    known = torch.as_tensor(histories(split.known_before("test"), data.n_users, 4, data.n_items))
    train_only = torch.as_tensor(histories(split.train, data.n_users, 4, data.n_items))
    np.testing.assert_allclose(s.fn(users), score_fn(model, known)(users), rtol=1e-6)
    assert not np.allclose(s.fn(users), score_fn(model, train_only)(users))


def test_index_benchmark_reads_train_and_validation(temporal, monkeypatch):
    data, split = temporal
    seen = []
    from pipelines.evaluation import index_part

    real = index_part.histories
    monkeypatch.setattr(index_part, "histories", lambda f, *a: seen.append(f) or real(f, *a))
    c = bench.BenchmarkConfig(dataset=DATASET, protocol="temporal", indexes=("flat",),
                              n_single=2)  # fmt: skip
    seg = make_segments(split, 0, 0)[0]
    out = bench.bench_indexes(_history_student(data), split, data, seg, c)
    assert "flat" in out
    assert _valid_pairs(split) <= set(zip(seen[0]["user"].tolist(), seen[0]["item"].tolist()))


def test_ease_is_fit_on_train_and_scores_test_from_train_and_validation(temporal):
    data, split = temporal
    c = bench.BenchmarkConfig(dataset=DATASET, protocol="temporal")
    pop, ease, *_ = bench._references(c, split, data, None)
    assert ease.name == "ease"
    from pipelines.baselines.collab import fit_collab

    model, _ = fit_collab(split)  # fit on train: the same B
    users = split.valid["user"].to_numpy().copy()
    row = to_csr(split.known_before("test"), split.n_users, split.n_items)[users]
    assert (row.multiply(split.matrix("valid")[users]).sum(1) == 1).all()  # valid item in it
    np.testing.assert_allclose(ease.fn(users), np.asarray(row @ model.B), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ease.fn(users), model(users))  # not the train row
    np.testing.assert_array_equal(pop.fn(users)[0], np.asarray(split.matrix("train").sum(0))[0])


def test_cold_references_read_train_and_validation():
    from pipelines.evaluation.cold import profile_matrix, reference_scorers

    data = load_dataset("synthetic:users=60,items=60,per_user=14,seed=3")
    split = make_split(data, "cold_items", 0)
    prof = profile_matrix(split)
    assert prof.multiply(split.matrix("valid")).nnz == split.matrix("valid").nnz
    assert prof.multiply(split.matrix("new_history")).nnz == split.matrix("new_history").nnz
    assert prof.multiply(split.matrix("test")).nnz == 0
    scorers = {s.name: s for s in reference_scorers(split, data, None)}
    users = np.unique(split.valid["user"].to_numpy())
    ease = scorers["ease"].fn(users)
    cmap = scorers["content_map_no_text"].fn(users)
    from pipelines.baselines.collab import fit_collab

    model, _ = fit_collab(split)
    np.testing.assert_allclose(ease, np.asarray(prof[users] @ model.B), rtol=1e-5, atol=1e-6)
    from pipelines.baselines.content_map import content_features, fit_content_map
    from pipelines.data.features import item_features

    cm, _ = fit_content_map(split, model, content_features(item_features(data), None))
    np.testing.assert_allclose(cmap[:, cm.cold], np.asarray(prof[users] @ cm.columns.T),
                               rtol=1e-5, atol=1e-6)  # fmt: skip  # cold items: the profile too
    warm = np.setdiff1d(np.arange(split.n_items), cm.cold)
    np.testing.assert_allclose(cmap[:, warm], ease[:, warm], rtol=1e-6)


def test_ablation_scores_test_from_train_and_validation(temporal, tmp_path):
    from pipelines.core.metrics import evaluate
    from pipelines.experiments.ablation import _test_eval

    data, split = temporal
    model = _history_student(data)
    model.save_pretrained(tmp_path / "m")
    ev = _test_eval(tmp_path / "m", data, split)
    known = torch.as_tensor(histories(split.known_before("test"), data.n_users, 4, data.n_items))
    want = evaluate(score_fn(model, known), split.matrix("test"), split.seen_for("test"),
                    return_topk=True)  # fmt: skip
    assert np.array_equal(ev["topk"], want["topk"])


def test_prepare_scores_ease_on_test_from_train_and_validation(temporal, tmp_path):
    from pipelines.baselines.collab import fit_collab
    from pipelines.baselines.prepare import PrepareConfig
    from pipelines.baselines.prepare import run as prepare
    from pipelines.core.metrics import evaluate

    data, split = temporal
    got = prepare(PrepareConfig(dataset=DATASET, protocols=("temporal",), out=str(tmp_path / "p")))
    model, _ = fit_collab(split)
    known = to_csr(split.known_before("test"), split.n_users, split.n_items)
    truth, seen = split.matrix("test"), split.seen_for("test")
    want = evaluate(model.from_histories(known), truth, seen)["ndcg@10"]
    assert got["protocols"]["temporal"]["ease"]["ndcg@10"] == pytest.approx(want)
    assert want != pytest.approx(evaluate(model, truth, seen)["ndcg@10"])  # train rows differ
