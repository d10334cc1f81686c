"""The cold-start chain on tiny data: labels that score cold items, content-tower students,
and the cold / warm / all report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pipelines.data.splits as splits
from pipelines.core.config import make_config
from pipelines.evaluation.benchmark import BenchmarkConfig
from pipelines.evaluation.benchmark import run as bench
from pipelines.labels.generate_labels import GenerateLabelsConfig
from pipelines.labels.generate_labels import run as generate
from pipelines.labels.schema import columns, load_labels
from pipelines.training.train_student import TrainStudentConfig
from pipelines.training.train_student import run as train

DATASET = "synthetic:users=60,items=90,per_user=14,seed=8"
SMALL = dict(epochs=2, batch_size=64, id_dim=8, user_hidden=(16,), item_hidden=(16,), out_dim=8, history_len=8,
             n_negatives=16, soft_users=16, threads=1)  # fmt: skip


def _labels_config(out: Path, model: Path) -> GenerateLabelsConfig:
    return GenerateLabelsConfig(
        dataset=DATASET,
        protocol="cold_items",
        model=str(model),
        n_negatives=10,
        max_positives=5,
        cold_negatives=6,
        eval_users=40,
        eval_negatives=8,
        threads=1,
        max_seq_length=32,
        out=str(out),
    )


def _labels(out: Path, model: Path) -> dict:
    return generate(_labels_config(out, model))


def _student(out: Path, labels: Path, hard: bool, cold_setting: str = "inductive") -> None:
    train(
        make_config(
            TrainStudentConfig,
            dataset=DATASET,
            protocol="cold_items",
            cold_setting=cold_setting,
            labels=str(labels),
            no_teacher=hard,
            use_text=True,
            item_id_dropout=0.5,
            w_cold_kl=0.0 if hard or cold_setting == "inductive" else 1.0,
            out=str(out),
            **SMALL,
        )
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_st_dir):
    tmp = tmp_path_factory.mktemp("cold")
    meta = _labels(tmp / "labels", tiny_st_dir)
    for name, hard in (("hard", True), ("distilled", False)):
        _student(tmp / name, tmp / "labels", hard)
    report = bench(
        BenchmarkConfig(
            dataset=DATASET,
            protocol="cold_items",
            labels=str(tmp / "labels"),
            student_hard=str(tmp / "hard" / "model"),
            student_distilled=str(tmp / "distilled" / "model"),
            indexes=(),
            n_single=3,
            bootstrap=50,
            out=str(tmp / "bench"),
        )
    )
    return tmp, meta, report


def test_labels_score_cold_items_and_say_how(chain):
    tmp, meta, _ = chain
    cold = meta["cold"]
    assert cold["content_map"] == "text" and cold["cold_items"] > 0
    assert set(cold["scored_by"]) == {"ease", "popularity", "text"}
    assert "cold" in meta["teacher"]["mix"]  # the cold items' own mix, fit on cold-validation
    cold_items = np.load(tmp / "labels" / cold["items_file"])
    split = splits.make_split(splits_data(), "cold_items", 0)
    assert set(split.cold_test_items) <= set(cold_items)  # no train interaction: cold
    ds, _ = load_labels(tmp / "labels")
    # inductive (the default): no item without a train interaction is a candidate
    assert not np.isin(columns(ds)["item"], cold_items).any()


def splits_data():
    from pipelines.data import load_dataset

    return load_dataset(DATASET)


def test_cold_report_schema(chain):
    tmp, _, report = chain
    assert report["protocol"] == "cold_items"
    names = set(report["models"])
    assert {"random", "genre_profile", "zero_shot_text", "content_map", "content_map_no_text",
            "popularity", "ease", "teacher", "student_hard", "student_distilled"} <= names  # fmt: skip
    for name, m in report["models"].items():
        segs = m["segments"]
        # head and tail: the warm segment split by train popularity (evaluation/warm.py)
        assert set(segs) == {"cold", "warm", "all", "new_users", "head", "tail"}, name
        assert {"ndcg@10", "recall@10", "users"} <= set(segs["head"]), name
        for seg, v in segs.items():
            if seg in ("head", "tail"):
                continue
            if v is None:  # popularity and EASE^R cannot score a cold item, nor the teacher's
                # labels a new user
                assert (seg, name) in {("cold", "popularity"), ("cold", "ease"),
                                       ("new_users", "teacher")}  # fmt: skip
                continue
            assert {"ndcg@10", "ndcg@20", "recall@10", "recall@20", "mrr@10", "ndcg@20_ci"} <= set(
                v
            )
            lo, hi = v["ndcg@20_ci"]
            assert lo <= v["ndcg@20"] <= hi
    assert report["models"]["ease"]["segments"]["cold"] is None
    saved = json.loads((tmp / "bench" / "report.json").read_text())
    assert saved["models"]["popularity"]["segments"]["cold"] is None
    md = (tmp / "bench" / "report.md").read_text()
    assert "cold NDCG@20" in md and "cannot score" in md
    assert "student_distilled_vs_student_hard" in report["comparisons"]
    assert "new_users:student_distilled_vs_ease" in report["comparisons"]
    assert "## Cold start: new users" in md and "new-user NDCG@20" in md
    new_users = report["dataset"]["split"]["users"]["new_users"]
    assert new_users == report["dataset"]["split"]["new_users"] > 0


def test_new_users_are_scored_from_their_history_alone(chain):
    # a student scores a new user from the query-time history: changing the (never trained) id
    # embedding of the new users changes nothing, changing the history does
    from pipelines.data import histories
    from student.model import TwoTower
    from student.scoring import score_fn

    tmp, _, _ = chain
    data = splits_data()
    split = splits.make_split(data, "cold_items", 0)
    model = TwoTower.from_pretrained(tmp / "distilled" / "model")
    hist = torch.as_tensor(
        histories(split.new_history, data.n_users, model.config.history_len, data.n_items)
    )
    users = split.new_users
    before = score_fn(model, hist, new_users=True)(users)
    with torch.no_grad():
        model.user_id_emb.weight[torch.as_tensor(users)] = 5.0
        model.user_features[torch.as_tensor(users)] += 3.0
    assert np.array_equal(before, score_fn(model, hist, new_users=True)(users))
    other = hist[torch.as_tensor(users)].roll(1, dims=0)
    hist2 = hist.clone()
    hist2[torch.as_tensor(users)] = other
    assert not np.allclose(before, score_fn(model, hist2, new_users=True)(users))


def test_cold_items_never_shape_training(monkeypatch, tmp_path, tiny_st_dir):
    # move every cold-test interaction to another cold-test item, and every new user's history
    # and target to another item: labels and students must not change (the future)
    real = splits.make_split

    def other(*a, **kw):
        s = real(*a, **kw)
        if s.protocol != "cold_items":
            return s
        ct = s.cold_test.copy()
        items = s.cold_test_items
        ct["item"] = items[(np.searchsorted(items, ct["item"].to_numpy()) + 1) % len(items)]
        moved = {}
        for name in ("new_history", "new_test"):
            f = getattr(s, name).copy()
            f["item"] = (f["item"] + 1) % s.n_items
            moved[name] = f.astype(getattr(s, name).dtypes.to_dict())
        return replace(s, cold_test=ct.astype(s.cold_test.dtypes.to_dict()), **moved)

    got = []
    for k in (0, 1):
        if k:
            monkeypatch.setattr(splits, "make_split", other)
        out = tmp_path / f"f{k}"
        _labels(out / "labels", tiny_st_dir)
        _student(out / "distilled", out / "labels", hard=False)
        ds, _ = load_labels(out / "labels")
        got.append((columns(ds), load_file(str(out / "distilled" / "model" / "model.safetensors"))))
    (c0, w0), (c1, w1) = got
    assert all(np.array_equal(c0[n], c1[n]) for n in c0)
    assert all(torch.equal(w0[n], w1[n]) for n in w0)


def test_inductive_training_never_holds_the_cold_test_items(chain):
    # the default setting: the cold-test items arrive after training, so no label row, cold
    # candidate or negative of the training side is one of them
    from pipelines.data import load_dataset, training_split
    from pipelines.training.job_inputs import objective_inputs

    tmp, meta, _ = chain
    assert meta["split"]["cold_setting"] == "inductive"
    full = splits.make_split(splits_data(), "cold_items", 0)
    t = columns(load_labels(tmp / "labels")[0])
    assert not np.isin(t["item"], full.cold_test_items).any()
    assert not np.isin(t["item"], full.cold_valid_items).any() and "cold" not in set(t["source"])
    view = training_split(load_dataset(DATASET), "cold_items", 0)
    assert not np.isin(view.training_items(), full.cold_test_items).any()
    c = make_config(
        TrainStudentConfig, dataset=DATASET, protocol="cold_items", no_teacher=True, **SMALL
    )
    inputs = objective_inputs(c, splits_data(), view, None, None, False)
    assert (inputs.p_neg[full.cold_test_items] == 0).all() and inputs.p_neg.sum() > 0.99
    assert not np.isin(inputs.items, full.cold_test_items).any()


def test_transductive_students_give_the_cold_transductive_segment(chain, tiny_st_dir):
    from common.io import ArtifactError

    tmp, _, _ = chain
    t = tmp / "transductive"
    generate(replace(_labels_config(t / "labels", tiny_st_dir), cold_setting="transductive"))
    full = splits.make_split(splits_data(), "cold_items", 0)
    rows = columns(load_labels(t / "labels")[0])
    is_cold = rows["source"] == "cold"
    no_train = np.flatnonzero(np.bincount(full.train["item"], minlength=full.n_items) == 0)
    assert is_cold.any() and set(rows["item"][is_cold]) <= set(no_train)
    assert np.isin(rows["item"][is_cold], full.cold_test_items).any()
    users_with_train = np.unique(full.train["user"].to_numpy())
    assert set(rows["user"][is_cold]) == set(users_with_train)  # every training user gets some
    _student(t / "distilled", t / "labels", hard=False, cold_setting="transductive")
    cfg = BenchmarkConfig(dataset=DATASET, protocol="cold_items", labels=str(tmp / "labels"),
                          student_distilled=str(tmp / "distilled" / "model"),
                          transductive_distilled=str(t / "distilled" / "model"), indexes=(),
                          n_single=3, bootstrap=50, out=str(t / "bench"))  # fmt: skip
    report = bench(cfg)
    models = report["models"]
    seg = models["student_distilled"]["segments"]
    assert seg["cold_transductive"] is not None and seg["cold"] is not None
    assert (
        models["content_map"]["segments"]["cold_transductive"]
        == models["content_map"]["segments"]["cold"]
    )
    assert "cold_transductive:student_distilled_vs_teacher" in report["comparisons"]
    assert report["cold_protocol"] == {"rule": "aldi", "setting": "inductive",
                                       "transductive_models": ["student_distilled"]}  # fmt: skip
    assert "cold transductive NDCG@20" in (t / "bench" / "report.md").read_text()
    # a student of the other setting is refused where this one is expected
    swapped = replace(cfg, student_distilled=cfg.transductive_distilled, transductive_distilled=None,
                      out=str(t / "bench2"))  # fmt: skip
    with pytest.raises(ArtifactError, match="--cold-setting"):
        bench(swapped)
