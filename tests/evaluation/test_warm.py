"""The report's warm views (pipelines/evaluation/warm.py): head and tail by train popularity,
and the teacher against the hard student on validation."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from pipelines.core.config import make_config
from pipelines.core.metrics import evaluate
from pipelines.data import load_dataset, make_split
from pipelines.evaluation.report import render_markdown
from pipelines.evaluation.segments import Scored, Scorer, Segment
from pipelines.evaluation.warm import add_head_tail, head_items, side_metrics, teacher_vs_hard


def _train(counts: list[int]) -> sp.csr_matrix:
    """One user per interaction, so item i has counts[i] train interactions."""
    items = np.repeat(np.arange(len(counts)), counts)
    return sp.csr_matrix(
        (np.ones(len(items), np.float32), (np.arange(len(items)), items)),
        shape=(len(items), len(counts)),
    )


def test_head_holds_the_top_80_percent_of_train_interactions():
    # shares before each item (by count): 0, .5, .8, .9, 1.0 -> items 0 and 1 hold 80%
    assert head_items(_train([5, 3, 1, 1, 0])).tolist() == [True, True, False, False, False]
    # equal counts: the lower index first; 4 of 5 items reach 80%
    assert head_items(_train([1, 1, 1, 1, 1])).tolist() == [True, True, True, True, False]
    # order does not depend on the index: the popular item 3 is head
    assert head_items(_train([1, 0, 1, 8])).tolist() == [False, False, False, True]


def test_side_metrics_count_only_that_sides_targets():
    head = np.array([True, True, False, False, False])
    truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], np.float32))
    top = np.array([[3, 0, 1, 2, 4] + [4] * 5, [0, 1, 2, 3, 4] + [4] * 5])
    h = side_metrics(top, truth, np.array([0, 1]), head)
    t = side_metrics(top, truth, np.array([0, 1]), ~head)
    # head: user 0 only (target 0 at rank 2); user 1 has no head target
    assert h == {"ndcg@10": pytest.approx(1 / math.log2(3)), "recall@10": 1.0, "users": 1}
    # tail: user 0's target 3 at rank 1 (NDCG 1), user 1's target 2 at rank 3
    assert t["users"] == 2 and t["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 2)
    assert side_metrics(top, truth, np.array([1]), head)["ndcg@10"] is None


def test_add_head_tail_uses_each_models_own_ranking_and_users():
    train = _train([5, 3, 1, 1, 0])
    truth = sp.csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], np.float32))
    seg = Segment("test", truth, None, None, np.array([0, 1]), 2)
    top = np.array([[3, 0, 1, 2, 4] + [4] * 5, [0, 1, 2, 3, 4] + [4] * 5])
    full = Scored({}, np.zeros(2), [0, 0], top)
    only_user_1 = Scored({}, np.zeros(1), [0, 0], top[1:], rows=np.array([1]))
    models = {"a": {}, "b": {}, "c": {}}
    info = add_head_tail(models, {"a": {"test": full}, "b": {"test": only_user_1},
                                  "c": {"test": None}}, seg, train)  # fmt: skip
    assert models["a"]["segments"]["head"]["users"] == 1
    assert models["a"]["segments"]["tail"]["ndcg@10"] == pytest.approx(0.75)
    assert models["b"]["segments"]["head"]["users"] == 0
    assert models["b"]["segments"]["tail"]["ndcg@10"] == pytest.approx(0.5)
    assert "segments" not in models["c"]
    assert info | {} == {"segment": "test", "head_share": 0.8, "head_items": 2, "tail_items": 3,
                         "head_train_interactions": 8, "train_interactions": 10,
                         "head_targets": 1, "tail_targets": 2}  # fmt: skip


def test_teacher_vs_hard_states_which_is_stronger(tmp_path):
    data = load_dataset("synthetic:users=30,items=40,per_user=8,seed=1")
    split = make_split(data, "random", 0)
    pop = np.asarray(split.matrix("train").sum(0)).ravel().astype(np.float32)
    teacher = Scorer("teacher", lambda u: np.tile(pop, (len(u), 1)))
    expected = evaluate(teacher.fn, split.matrix("valid"), split.seen_for("valid"))["ndcg@10"]
    (tmp_path / "hard" / "model").mkdir(parents=True)
    grid = {"chosen": {"scale": 0.0, "temperature": 1.0}, "zero_won": True, "zero_added": True,
            "grid": [{"scale": 0.0, "temperature": 1.0, "valid": {"ndcg@10": 0.3}},
                     {"scale": 1.0, "temperature": 1.0, "valid": {"ndcg@10": 0.2}}]}  # fmt: skip
    (tmp_path / "dist" / "model").mkdir(parents=True)
    (tmp_path / "dist" / "metrics.json").write_text(json.dumps({"selection": grid}))
    c = SimpleNamespace(student_hard=str(tmp_path / "hard" / "model"), eval_users=0, eval_seed=0,
                        student_distilled=str(tmp_path / "dist" / "model"))  # fmt: skip
    for hard, weaker in ((expected + 0.01, True), (expected, False)):
        metrics = {"valid": {"ndcg@10": hard}, "valid_users": {"users": 17}}
        (tmp_path / "hard" / "metrics.json").write_text(json.dumps(metrics))
        tv = teacher_vs_hard(c, split, [teacher], bootstrap=10)
        assert tv["teacher"]["ndcg@10"] == pytest.approx(expected)
        assert tv["student_hard"] == {"ndcg@10": hard, "users": 17}
        assert tv["teacher_weaker"] is weaker
        md = render_markdown(
            {
                "dataset": {},
                "protocol": "random",
                "models": {},
                "indexes": {},
                "teacher_vs_hard": tv,
            }
        )
        assert ("teacher is WEAKER than the hard student" in md) is weaker
    assert tv["selection"]["zero_won"] and "Scale 0 won" in md
    assert [g["valid_ndcg@10"] for g in tv["selection"]["grid"]] == [0.3, 0.2]
    assert teacher_vs_hard(SimpleNamespace(student_hard=None, student_distilled=None), split, [],
                           10) is None  # fmt: skip


def test_benchmark_reports_head_tail_and_teacher_vs_hard(tmp_path, tiny_st_dir):
    from pipelines.evaluation.benchmark import BenchmarkConfig
    from pipelines.evaluation.benchmark import run as benchmark
    from pipelines.labels.config import GenerateLabelsConfig
    from pipelines.labels.generate_labels import run as generate
    from pipelines.training.train_student import TrainStudentConfig
    from pipelines.training.train_student import run as train

    ds = "synthetic:users=40,items=50,per_user=10,seed=2"
    generate(GenerateLabelsConfig(dataset=ds, model=str(tiny_st_dir), n_negatives=8,
                                  max_positives=5, eval_users=20, eval_negatives=10, threads=1,
                                  max_seq_length=32, out=str(tmp_path / "labels")))  # fmt: skip
    small = dict(dataset=ds, epochs=1, user_hidden=(16,), item_hidden=(16,), id_dim=8, out_dim=8,
                 history_len=5, n_negatives=8, threads=1)  # fmt: skip
    train(make_config(TrainStudentConfig, **small, no_teacher=True, out=str(tmp_path / "hard")))
    train(make_config(TrainStudentConfig, **small, labels=str(tmp_path / "labels"),
                      distill_scales=(1.0,), out=str(tmp_path / "dist")))  # fmt: skip
    report = benchmark(
        BenchmarkConfig(
            dataset=ds,
            labels=str(tmp_path / "labels"),
            indexes=(),
            n_single=2,
            student_hard=str(tmp_path / "hard" / "model"),
            bootstrap=20,
            student_distilled=str(tmp_path / "dist" / "model"),
            out=str(tmp_path / "bench"),
        )  # fmt: skip
    )
    ht = report["head_tail"]
    assert ht["segment"] == "test" and ht["head_items"] + ht["tail_items"] == 50
    for name in ("popularity", "teacher", "student_hard", "student_distilled"):
        assert set(report["models"][name]["segments"]) == {"head", "tail"}, name
    tv = report["teacher_vs_hard"]
    assert tv["teacher"] is not None and tv["student_hard"] is not None
    # scored with the ranking that read train only (the test one excludes the validation items)
    assert tv["teacher"]["ndcg@10"] > 0
    assert isinstance(tv["teacher_weaker"], bool) and tv["selection"]["chosen"]["scale"] in (0, 1)
    md = (tmp_path / "bench" / "report.md").read_text()
    assert "## Head and tail" in md and "tail NDCG@10" in md and "## Teacher vs hard student" in md
    saved = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert saved["head_tail"] == ht
