"""`recdistill demo` runs the sequential chain too: the temporal protocol under
``<out>/temporal``, with sasrec students, compression and its own report."""

from __future__ import annotations

import json

from pipelines.cli import main
from pipelines.core.layout import RunLayout
from student.model import TwoTower

SMALL = {
    "labels": {"max_seq_length": 16, "n_negatives": 8, "eval_users": 10, "threads": 1},
    "student_hard": {"user_hidden": [8], "item_hidden": [8], "n_negatives": 8, "history_len": 8},
    "student_distilled": {"user_hidden": [8], "item_hidden": [8], "n_negatives": 8,
                          "history_len": 8},
    "compress": {"finetune_epochs": 0},
    "benchmark": {"bootstrap": 10, "n_single": 3, "indexes": ["flat"]},
}  # fmt: skip
OVERRIDES = SMALL | {f"temporal_{step}": fields for step, fields in SMALL.items()}


def test_the_demo_runs_a_temporal_chain_with_sequential_students(tmp_path, tiny_st_dir):
    out = tmp_path / "run"
    report = main(["demo", "--dataset", "synthetic:users=40,items=50,per_user=8",
                   "--teacher-model", str(tiny_st_dir), "--epochs", "1", "--no-cold-start",
                   "--overrides", json.dumps(OVERRIDES), "--out", str(out)])  # fmt: skip
    assert report["protocol"] == "random"
    temporal = report["temporal"]
    assert temporal["protocol"] == "temporal"
    assert {"student_hard", "student_distilled", "student_int8", "transition"} <= set(
        temporal["models"]
    )
    run = RunLayout(out).temporal
    for name in ("student_hard", "student_distilled"):
        assert TwoTower.from_pretrained(run.model(name)).config.user_encoder == "sasrec"
    # the main chain's students keep the mean of the history
    assert TwoTower.from_pretrained(RunLayout(out).model("student_hard")).config.user_encoder == (
        "mean"
    )
    assert (run.benchmark / "report.json").is_file()


def test_a_temporal_demo_has_no_second_temporal_chain(tmp_path, tiny_st_dir):
    out = tmp_path / "run"
    report = main(["demo", "--dataset", "synthetic:users=40,items=50,per_user=8",
                   "--protocol", "temporal", "--teacher-model", str(tiny_st_dir), "--epochs",
                   "1", "--no-cold-start", "--overrides", json.dumps(SMALL), "--out",
                   str(out)])  # fmt: skip
    assert "temporal" not in report
    assert not RunLayout(out).temporal.root.exists()
    model = TwoTower.from_pretrained(RunLayout(out).model("student_distilled"))
    assert model.config.user_encoder == "sasrec"
