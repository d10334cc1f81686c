"""Sampled evaluation end to end: the teacher top-k of a user sample, and the benchmark on a
seeded sample of test users (all users: the full evaluation, bit for bit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.core.config import make_config
from pipelines.data import load_dataset, make_split
from pipelines.evaluation.benchmark import BenchmarkConfig
from pipelines.evaluation.benchmark import run as benchmark
from pipelines.evaluation.report import validate_report
from pipelines.labels.config import GenerateLabelsConfig
from pipelines.labels.generate_labels import run as generate
from pipelines.training.train_student import TrainStudentConfig
from pipelines.training.train_student import run as train

DATASET = "synthetic:users=50,items=70,per_user=12,seed=4"
LABELS = dict(
    dataset=DATASET,
    n_negatives=8,
    max_positives=5,
    eval_users=20,
    eval_negatives=10,
    shard_users=10,
    threads=1,
    max_seq_length=32,
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_st_dir):
    tmp = tmp_path_factory.mktemp("sampled")
    full = generate(GenerateLabelsConfig(model=str(tiny_st_dir), out=str(tmp / "full"), **LABELS))
    part = generate(
        GenerateLabelsConfig(model=str(tiny_st_dir), out=str(tmp / "part"), topk_users=15, **LABELS)
    )
    train(
        make_config(
            TrainStudentConfig,
            dataset=DATASET,
            no_teacher=True,
            epochs=1,
            user_hidden=(16,),
            item_hidden=(16,),
            id_dim=8,
            out_dim=8,
            history_len=5,
            n_negatives=8,
            threads=1,
            out=str(tmp / "st"),
        )
    )
    return tmp, full, part


def _bench(tmp, name, labels, **kw):
    return benchmark(
        BenchmarkConfig(
            dataset=DATASET,
            labels=str(tmp / labels),
            student_distilled=str(tmp / "st" / "model"),
            indexes=("flat",),
            n_single=2,
            bootstrap=20,
            out=str(tmp / name),
            **kw,
        )
    )


def test_teacher_topk_of_a_sample_is_the_full_top_k_of_those_users(chain):
    tmp, full, part = chain
    assert "teacher_topk_users" not in full
    users = np.load(tmp / "part" / "teacher_topk_users.npy")
    assert part["teacher_topk_sample"] == {"users": 15, "of": full["n_users"], "seed": 0}
    assert len(users) == 15 and (np.diff(users) > 0).all()
    split = make_split(load_dataset(DATASET), "random", 0)
    assert (np.diff(split.matrix("train").indptr)[users] > 0).all()  # training users only
    whole, some = (
        np.load(tmp / "full" / "teacher_topk.npy"),
        np.load(tmp / "part" / "teacher_topk.npy"),
    )
    assert whole.shape[0] == split.n_users and some.shape == (15, whole.shape[1])
    np.testing.assert_array_equal(some, whole[users])
    # the soft labels themselves do not depend on the top-k sample
    assert part["n_pairs"] == full["n_pairs"]


def test_sample_of_all_users_is_the_full_benchmark(chain):
    tmp, _, _ = chain
    a = _bench(tmp, "all", "full")
    b = _bench(tmp, "big", "full", eval_users=10_000, eval_seed=3)
    validate_report(b)
    assert not a["evaluation"]["sampled"] and a["evaluation"]["text"].startswith("all ")
    drop = (
        "latency_ms_batch1",
        "user_encode_ms_batch1",
        "qps_batch1",
        "qps_batch256",
        "p50_ms",
        "p99_ms",
        "sweep",
    )
    for name, m in a["models"].items():
        assert {k: v for k, v in m.items() if k not in drop} == {
            k: v for k, v in b["models"][name].items() if k not in drop
        }, name
    assert a["indexes"]["flat"]["ndcg@10"] == b["indexes"]["flat"]["ndcg@10"]


def test_sampled_benchmark_names_its_sample(chain):
    tmp, _, _ = chain
    rep = _bench(tmp, "s", "part", eval_users=12, eval_seed=1)
    validate_report(rep)
    ev = rep["evaluation"]
    n_test = rep["dataset"]["split"]["test_users"]
    assert ev["users"] == 12 and ev["of"] == n_test and ev["seed"] == 1
    assert ev["text"] == f"12 of {n_test} test users, seed 1"
    for name, m in rep["models"].items():
        assert 0 <= m["ndcg@10"] <= 1, name
    # the teacher: the evaluation users its top-k sample covers
    sampled = np.load(tmp / "part" / "teacher_topk_users.npy")
    split = make_split(load_dataset(DATASET), "random", 0)
    from pipelines.core.metrics import sample_users

    users = sample_users(split.matrix("test"), 12, seed=1)
    assert ev["teacher_users"] == len(np.intersect1d(users, sampled))
    md = (tmp / "s" / "report.md").read_text()
    assert f"12 of {n_test} test users, seed 1" in md
    assert json.loads((tmp / "s" / "report.json").read_text())["evaluation"]["users"] == 12


def test_bad_eval_users_is_named():
    with pytest.raises(ValueError, match="eval_users=-1"):
        BenchmarkConfig(eval_users=-1)
    with pytest.raises(ValueError, match="topk_users=-2"):
        GenerateLabelsConfig(topk_users=-2)
