from __future__ import annotations

import json

import pytest

from pipelines.compression.compress import CompressConfig
from pipelines.compression.compress import run as compress
from pipelines.core.config import make_config
from pipelines.demo import STEP_FILE, DemoConfig
from pipelines.demo import run as demo
from pipelines.evaluation.benchmark import BenchmarkConfig
from pipelines.evaluation.benchmark import run as benchmark
from pipelines.evaluation.report import validate_report
from pipelines.training.train_student import TrainStudentConfig
from pipelines.training.train_student import run as train
from student.compress import load_quantized
from student.model import TwoTower

DATASET = "synthetic:users=60,items=90,per_user=12,seed=5"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("st")
    train(
        make_config(
            TrainStudentConfig,
            dataset=DATASET,
            no_teacher=True,
            epochs=2,
            user_hidden=(32,),
            item_hidden=(32,),
            id_dim=16,
            out_dim=16,
            history_len=10,
            n_negatives=16,
            threads=1,
            out=str(out),
        )
    )
    return out / "model"


def test_compress_makes_smaller_models(tmp_path, student_dir):
    res = compress(
        CompressConfig(
            model=str(student_dir),
            dataset=DATASET,
            out=str(tmp_path / "c"),
            finetune_epochs=1,
            threads=1,
        )
    )
    s = res["steps"]
    assert s["structured_prune"]["params"] < s["original"]["params"]
    # feature buffers and biases stay fp32, a large share of a tiny model
    assert s["int8"]["bytes"] < s["structured_prune"]["bytes"] / 1.5
    assert s["int8"]["params"] == s["finetune"]["params"]  # same weights, stored in int8
    assert s["magnitude_prune"]["bytes"] == s["original"]["bytes"]  # zeros do not shrink a model
    assert "neither smaller nor faster" in s["magnitude_prune"]["note"]
    pruned = TwoTower.from_pretrained(tmp_path / "c" / "pruned")
    assert pruned.config.user_hidden[0] == 16
    q = load_quantized(tmp_path / "c" / "int8")
    assert q.config.n_items == 90
    saved = json.loads((tmp_path / "c" / "compression.json").read_text())
    assert set(saved["steps"]) == {
        "original",
        "structured_prune",
        "finetune",
        "magnitude_prune",
        "int8",
        "int8_fast",
    }
    # the latency-aware variant says, per part, whether int8 was kept and why
    decisions = s["int8_fast"]["record"]["decisions"]
    assert all("reason" in d for d in decisions.values())
    assert load_quantized(tmp_path / "c" / "int8_fast").config.n_items == 90


def test_compress_refuses_other_dataset(tmp_path, student_dir):
    with pytest.raises(ValueError, match="compress with the dataset it was trained on"):
        compress(
            CompressConfig(
                model=str(student_dir),
                dataset="synthetic:users=10,items=20,per_user=5",
                out=str(tmp_path / "x"),
            )
        )


def test_benchmark_report_schema(tmp_path, student_dir):
    c = tmp_path / "c"
    compress(
        CompressConfig(
            model=str(student_dir),
            dataset=DATASET,
            out=str(c),
            finetune_epochs=0,
            magnitude_sparsity=0,
            int8="all",
            threads=1,
        )
    )
    rep = benchmark(
        BenchmarkConfig(
            dataset=DATASET,
            student_hard=str(student_dir),
            student_distilled=str(student_dir),
            student_pruned=str(c / "pruned"),
            student_int8=str(c / "int8"),
            n_single=20,
            bootstrap=100,
            out=str(tmp_path / "b"),
        )
    )
    validate_report(rep)
    assert set(rep["models"]) == {
        "popularity",
        "ease",
        "transition",
        "student_hard",
        "student_distilled",
        "student_pruned",
        "student_int8",
    }
    assert set(rep["indexes"]) == {"flat", "sq8", "ivf_sq8", "hnsw_sq8"}
    assert rep["indexes"]["flat"]["recall@10_vs_exact"] == 1.0
    assert rep["comparisons"]["distilled_minus_hard_ndcg@10"]["mean"] == 0.0  # same model twice
    for f in ("report.json", "report.md"):
        assert (tmp_path / "b" / f).exists()
    assert list((tmp_path / "b").glob("*.png"))


SMALL_LABELS = {"max_seq_length": 32, "n_negatives": 10, "eval_users": 20, "threads": 1}


def test_demo_chain_reuses_unchanged_steps(tmp_path, tiny_st_dir):
    cfg = DemoConfig(
        dataset=DATASET,
        teacher_model=str(tiny_st_dir),
        epochs=1,
        temporal_chain=False,  # its own test: tests/experiments/test_demo_temporal.py
        overrides={
            "labels": SMALL_LABELS,
            "student_hard": {"user_hidden": [32], "item_hidden": [32]},
            "cold_labels": {**SMALL_LABELS, "cold_negatives": 5},
            "cold_student_distilled": {"user_hidden": [32], "item_hidden": [32]},
            "cold_transductive_labels": {**SMALL_LABELS, "cold_negatives": 5},
            "cold_transductive_student_distilled": {"user_hidden": [32], "item_hidden": [32]},
        },
        out=str(tmp_path / "demo"),
    )
    rep = demo(cfg)
    validate_report(rep)
    assert "teacher" in rep["models"] and "student_int8" in rep["models"]
    # the cold-start chain is part of the demo, with its own report
    cold = json.loads((tmp_path / "demo" / "cold" / "benchmark" / "report.json").read_text())
    assert cold["protocol"] == "cold_items"
    assert {"teacher", "student_hard", "student_distilled", "student_int8"} <= set(cold["models"])
    assert cold["models"]["student_int8"]["segments"]["cold"]["ndcg@20"] >= 0
    # and its transductive students (the cold-test items known to their label job)
    assert cold["cold_protocol"]["setting"] == "inductive"
    assert cold["cold_protocol"]["transductive_models"] == ["student_distilled", "student_int8"]
    assert cold["models"]["student_int8"]["segments"]["cold_transductive"]["ndcg@20"] >= 0
    t_dist = tmp_path / "demo" / "cold" / "transductive" / "student_distilled" / "metrics.json"
    t_cfg = json.loads(t_dist.read_text())["config"]
    assert t_cfg["cold_setting"] == "transductive" and t_cfg["loss"]["cold_kl"] == 1.0
    assert t_cfg["model"]["user_hidden"] == [32]
    cold_dist = tmp_path / "demo" / "cold" / "student_distilled" / "metrics.json"
    assert json.loads(cold_dist.read_text())["config"]["model"]["user_hidden"] == [32]
    labels = json.loads((tmp_path / "demo" / "labels" / "recdistill_labels.json").read_text())
    assert {k: labels["config"][k] for k in SMALL_LABELS} == SMALL_LABELS  # reached the step
    hard = json.loads((tmp_path / "demo" / "student_hard" / "metrics.json").read_text())
    assert hard["config"]["model"]["user_hidden"] == [32]
    marker = tmp_path / "demo" / "student_hard" / STEP_FILE
    before = marker.stat().st_mtime_ns
    demo(cfg)
    assert marker.stat().st_mtime_ns == before  # reused
    demo(DemoConfig(**{**cfg.__dict__, "epochs": 2}))
    assert marker.stat().st_mtime_ns != before  # config changed: redone


def test_demo_overrides_are_checked():
    text = DemoConfig(overrides="{labels: {n_negatives: 10}, compress: {finetune_epochs: 2}}")
    assert text.step_overrides("labels") == {"n_negatives": 10}
    assert text.step_overrides("compress") == {"finetune_epochs": 2}
    assert DemoConfig().step_overrides("labels") == {}
    with pytest.raises(ValueError, match=r"unknown step\(s\) \['label'\]"):
        DemoConfig(overrides={"label": {"n_negatives": 10}})
    with pytest.raises(ValueError, match=r"\['n_negative'\] cannot be overridden"):
        DemoConfig(overrides={"labels": {"n_negative": 10}})
    with pytest.raises(ValueError, match="set by the demo itself"):
        DemoConfig(overrides={"student_hard": {"epochs": 3}})
    with pytest.raises(ValueError, match="expected a mapping"):
        DemoConfig(overrides="[1, 2]")


def test_sampled_finetune_is_bounded_and_exact_below_the_limit(student_dir):
    """Above ``max_items`` each step ranks a seeded item sample; at or below it the fine-tune
    is the full-catalogue one, bit for bit."""
    import copy

    import torch

    from pipelines.compression.compress import distill_finetune
    from pipelines.data import histories, load_dataset, training_split
    from student.compress import structured_prune

    data = load_dataset(DATASET)
    split = training_split(data, "random", 0)
    base = TwoTower.from_pretrained(student_dir)
    hist = torch.as_tensor(histories(split.train, data.n_users, 10, data.n_items))
    pruned, _ = structured_prune(base, 0.5)

    def tune(max_items):
        m = copy.deepcopy(pruned)
        torch.manual_seed(0)
        losses = distill_finetune(m, base, split, hist, 2, 2e-3, 1.0, 0, max_items=max_items)
        return m, losses

    full, l_full = tune(None)
    same, l_same = tune(data.n_items)
    assert l_full == l_same
    for a, b in zip(full.state_dict().values(), same.state_dict().values()):
        assert torch.equal(a, b)
    sampled, l_sampled = tune(20)
    assert l_sampled != l_full and all(v > 0 for v in l_sampled)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(sampled.state_dict().values(), pruned.state_dict().values())
    )
    with pytest.raises(ValueError, match="finetune_items"):
        CompressConfig(model="m", finetune_items=1)


def test_finetune_users_bound_each_epoch_and_all_users_is_the_default(student_dir):
    """``max_users`` at or above the train users is the default fine-tune bit for bit; below
    it each epoch passes over that many users."""
    import copy

    import torch

    from pipelines.compression.compress import distill_finetune
    from pipelines.data import histories, load_dataset, training_split
    from student.compress import structured_prune

    data = load_dataset(DATASET)
    split = training_split(data, "random", 0)
    base = TwoTower.from_pretrained(student_dir)
    hist = torch.as_tensor(histories(split.train, data.n_users, 10, data.n_items))
    pruned, _ = structured_prune(base, 0.5)
    n_users = split.train["user"].nunique()

    def tune(max_users):
        m = copy.deepcopy(pruned)
        seen, encode = [], m.encode_users
        m.encode_users = lambda u, h: (seen.append(len(u)), encode(u, h))[1]
        torch.manual_seed(0)
        losses = distill_finetune(m, base, split, hist, 2, 2e-3, 1.0, 0, max_users=max_users)
        return m, losses, seen

    full, l_full, seen_full = tune(0)
    same, l_same, _ = tune(n_users)
    assert l_full == l_same
    for a, b in zip(full.state_dict().values(), same.state_dict().values()):
        assert torch.equal(a, b)
    _, l_few, seen_few = tune(10)
    assert sum(seen_full) == 2 * n_users and sum(seen_few) == 2 * 10
    assert l_few != l_full
    with pytest.raises(ValueError, match="finetune_users"):
        CompressConfig(model="m", finetune_users=-1)


def test_compress_quality_on_a_validation_sample(tmp_path, student_dir):
    kw = dict(model=str(student_dir), dataset=DATASET, finetune_epochs=0, threads=1)
    full = compress(CompressConfig(**kw, out=str(tmp_path / "full")))
    same = compress(CompressConfig(**kw, valid_users=10_000, out=str(tmp_path / "same")))
    few = compress(CompressConfig(**kw, valid_users=5, out=str(tmp_path / "few")))
    assert full["steps"]["int8"]["valid_ndcg@10"] == same["steps"]["int8"]["valid_ndcg@10"]
    assert full["valid_users"]["users"] == same["valid_users"]["users"] > 5
    assert few["valid_users"]["users"] == 5
