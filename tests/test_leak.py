"""The future is unknown at training time: the test part never shapes training.

Two splits with identical train and validation parts and different test parts must give
bit-identical candidates, labels, adapters and student weights; and the training side's view
of the split has no test part to read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import pipelines.data.splits as splits
from pipelines.core.config import make_config
from pipelines.data import LeakError, load_dataset, make_split, training_split
from pipelines.labels.adapt_teacher import AdaptTeacherConfig
from pipelines.labels.adapt_teacher import run as adapt
from pipelines.labels.candidates import CandidateConfig, make_candidates
from pipelines.labels.generate_labels import GenerateLabelsConfig
from pipelines.labels.generate_labels import run as generate
from pipelines.labels.schema import columns, load_labels
from pipelines.training.train_student import TrainStudentConfig
from pipelines.training.train_student import run as train

DATASET = "synthetic:users=40,items=60,per_user=12,seed=3"


def _other_future(split):
    """The same split with every test interaction moved to another item of the catalogue
    (one the user has not got in train or validation): a different future."""
    rng = np.random.default_rng(123)
    test = split.test.copy()
    known = set(zip(split.train.user, split.train.item)) | set(
        zip(split.valid.user, split.valid.item)
    )
    items = []
    for u, i in zip(test.user, test.item):
        j = int(rng.integers(split.n_items))
        while j == i or (u, j) in known:
            j = int(rng.integers(split.n_items))
        items.append(j)
    test["item"] = np.asarray(items, dtype=test["item"].dtype)
    return splits.Split(
        split.protocol, split.seed, split.n_users, split.n_items, split.train, split.valid, test
    )


@pytest.fixture
def future(monkeypatch):
    """``future(k)``: make every ``make_split`` return the real split (k=0) or one whose test
    part is different (k=1); train and validation stay identical."""
    real = splits.make_split

    def use(k: int):
        if k == 0:
            monkeypatch.setattr(splits, "make_split", real)
        else:
            monkeypatch.setattr(
                splits, "make_split", lambda *a, **kw: _other_future(real(*a, **kw))
            )

    return use


def test_training_view_has_no_test_part():
    data = load_dataset(DATASET)
    view = training_split(data, "random", 0)
    with pytest.raises(LeakError, match="no test part"):
        view.matrix("test")
    full = make_split(data, "random", 0)
    assert full.has_test and not view.has_test
    assert view.fingerprint() == full.fingerprint()  # artifacts match the benchmark's split


def test_other_future_really_differs(future):
    data = load_dataset(DATASET)
    a = splits.make_split(data, "random", 0)
    future(1)
    b = splits.make_split(data, "random", 0)
    pd.testing.assert_frame_equal(a.train, b.train)
    assert (a.test.item.to_numpy() != b.test.item.to_numpy()).all()


def test_candidates_ignore_the_future(future):
    data = load_dataset(DATASET)
    cfg = CandidateConfig(n_negatives=20, max_positives=5, strategy="mixed", seed=0)
    got = []
    for k in (0, 1):
        future(k)
        got.append(make_candidates(training_split(data, "random", 0), cfg))
    pd.testing.assert_frame_equal(got[0], got[1])


@pytest.mark.parametrize("kind", ["ease", "als"])
def test_collab_fit_never_reads_the_test_part(kind, tmp_path):
    # evaluation jobs (prepare, benchmark) hand fit_collab the full split, and the fit they
    # cache is what generate-labels reads: the fit must see only train and validation
    from pipelines.baselines.collab import ALSConfig, fit_collab

    data = load_dataset(DATASET)
    full = make_split(data, "random", 0)
    als = ALSConfig(factors=4, iterations=2, num_threads=1)
    users = np.arange(data.n_users)
    scores = []
    for s in (full, _other_future(full)):
        model, info = fit_collab(s, kind, als=als, cache=tmp_path / "cache")
        scores.append(model(users))
    assert info["cache"]["hit"]  # the same key: the key does not hold the test part either
    np.testing.assert_array_equal(scores[0], scores[1])
    fresh, _ = fit_collab(_other_future(full), kind, als=als)
    np.testing.assert_allclose(fresh(users), scores[0], rtol=1e-5, atol=1e-6)


def test_collab_fit_gets_the_training_view(monkeypatch):
    # whatever a model's fit does, the split it receives has no test part to read
    import pipelines.baselines.collab as collab

    def peeking_fit(split, *args, **kwargs):
        split.matrix("test")

    monkeypatch.setattr(collab, "fit_ease", peeking_fit)
    full = make_split(load_dataset(DATASET), "random", 0)
    with pytest.raises(LeakError, match="no test part"):
        collab.fit_collab(full, "ease")


def test_labels_adapters_and_students_ignore_the_future(future, tmp_path, tiny_st_dir):
    labels, adapters, students = [], [], {}
    for k in (0, 1):
        future(k)
        out = tmp_path / f"f{k}"
        adapt(
            AdaptTeacherConfig(
                dataset=DATASET,
                teacher="embedding",
                model=str(tiny_st_dir),
                max_users=8,
                positives_per_user=2,
                history_items=4,
                max_seq_length=32,
                batch_size=4,
                max_steps=2,
                threads=1,
                out=str(out / "adapter"),
            )
        )
        adapters.append(load_file(str(out / "adapter" / "adapter_model.safetensors")))
        generate(
            GenerateLabelsConfig(
                dataset=DATASET,
                model=str(tiny_st_dir),
                n_negatives=10,
                max_positives=5,
                eval_users=20,
                eval_negatives=10,
                threads=1,
                max_seq_length=32,
                out=str(out / "labels"),
            )
        )
        ds, meta = load_labels(out / "labels")
        labels.append((columns(ds), meta["teacher_quality"], meta["split"]["fingerprint"]))
        for mode in ("hard", "distilled"):
            small = dict(
                epochs=2,
                batch_size=64,
                id_dim=8,
                user_hidden=(16,),
                item_hidden=(16,),
                out_dim=8,
                history_len=8,
            )
            train(
                make_config(
                    TrainStudentConfig,
                    dataset=DATASET,
                    labels=None if mode == "hard" else str(out / "labels"),
                    no_teacher=mode == "hard",
                    n_negatives=16,
                    soft_users=16,
                    threads=1,
                    out=str(out / mode),
                    **small,
                )
            )
            students.setdefault(mode, []).append(
                load_file(str(out / mode / "model" / "model.safetensors"))
            )
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][n], adapters[1][n]) for n in adapters[0])
    (c0, q0, f0), (c1, q1, f1) = labels
    assert f0 == f1 and q0 == q1
    assert all(np.array_equal(c0[n], c1[n]) for n in c0)
    for mode, (a, b) in students.items():
        assert a.keys() == b.keys()
        assert all(torch.equal(a[n], b[n]) for n in a), mode
