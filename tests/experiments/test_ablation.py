"""The ablation runs its labels and students as steps: a rerun reuses them and gives the same
table."""

from __future__ import annotations

import json
from functools import partial

from pipelines.experiments import ablation
from pipelines.experiments.ablation import AblationConfig, format_summary, run
from pipelines.experiments.steps import STEP_FILE
from pipelines.labels.generate_labels import GenerateLabelsConfig


def test_ablation_rerun_reuses_its_steps(tmp_path, tiny_st_dir, monkeypatch):
    # the tiny teacher reads 64 tokens at most; the ablation has no flag for that
    small = partial(GenerateLabelsConfig, max_seq_length=32, eval_users=20)
    monkeypatch.setattr(ablation, "GenerateLabelsConfig", small)
    cfg = AblationConfig(
        dataset="synthetic:users=60,items=90,per_user=12,seed=5",
        protocols=("random",),
        seeds=(0,),
        teacher_model=str(tiny_st_dir),
        epochs=1,
        label_negatives=10,
        bootstrap=20,
        threads=1,
        out=str(tmp_path / "ab"),
    )
    first = run(cfg)
    rows = first["protocols"]["random"]["rows"]
    assert {"student_hard", "student_distilled", "popularity"} <= set(rows)
    marker = tmp_path / "ab" / "random" / "distilled_seed0" / STEP_FILE
    before = marker.stat().st_mtime_ns
    again = run(cfg)
    assert marker.stat().st_mtime_ns == before  # reused
    for name, row in again["protocols"]["random"]["rows"].items():
        for m in ablation.METRICS:
            assert row[m] == rows[name][m], (name, m)  # the same numbers from the reused steps
    assert "distilled - hard NDCG@10" in format_summary(again)
    saved = json.loads((tmp_path / "ab" / "ablation.json").read_text())
    assert saved["protocols"]["random"]["test_users"] == first["protocols"]["random"]["test_users"]
