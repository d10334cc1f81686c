"""A demo rerun after the data changed under the same ``--dataset`` path: the step key holds
the data fingerprint, so prepare and the students are redone (not reused as "unchanged") and
the rerun finishes."""

from __future__ import annotations

import json

from common.versions import source_commit
from pipelines.cli import main
from pipelines.data import make_synthetic
from pipelines.data.synthetic import SyntheticConfig
from pipelines.demo import STEP_FILE

OVERRIDES = {
    "labels": {"max_seq_length": 16, "n_negatives": 8, "eval_users": 10, "threads": 1},
    "student_hard": {"user_hidden": [8], "item_hidden": [8], "n_negatives": 8},
    "student_distilled": {"user_hidden": [8], "item_hidden": [8], "n_negatives": 8},
    "compress": {"finetune_epochs": 0},
    "benchmark": {"bootstrap": 10, "n_single": 3, "indexes": ["flat"]},
}


def _export(folder, seed: int) -> None:
    """``interactions.csv`` + ``items.csv`` in the default column names, from synthetic data."""
    syn = make_synthetic(SyntheticConfig(users=30, items=40, per_user=8, seed=seed))
    inter = syn.interactions
    rows = ["user_id,item_id,rating,timestamp"] + [
        f"u{u},i{j},{r:g},{t}"
        for u, j, r, t in zip(inter.user, inter.item, inter.rating, inter.timestamp)
    ]
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n")
    items = ["item_id,title,genres,text,year"] + [
        f"i{j},{row.title},{'|'.join(row.genres)},{row.text},{int(row.year)}"
        for j, row in enumerate(syn.items.itertuples())
    ]
    (folder / "items.csv").write_text("\n".join(items) + "\n")


def _key(path) -> str:
    return json.loads((path / STEP_FILE).read_text())["key"]


def test_a_demo_rerun_on_changed_data_redoes_its_steps(tmp_path, tiny_st_dir):
    data = tmp_path / "shop"
    data.mkdir()
    _export(data, seed=1)
    out = tmp_path / "run"
    argv = ["demo", "--dataset", str(data), "--teacher-model", str(tiny_st_dir), "--epochs", "1",
            "--no-cold-start", "--no-temporal-chain", "--overrides", json.dumps(OVERRIDES), "--out", str(out)]  # fmt: skip
    main(argv)
    # the commit that made the run, which the README's tables name (recdistill report-readme)
    assert json.loads((out / "demo.json").read_text())["commit"] == source_commit()
    keys = {s: _key(out / s) for s in ("prepare", "student_hard")}
    _export(data, seed=2)  # the same path, other rows
    second = main(argv)
    assert "student_int8" in second["models"]
    for step, key in keys.items():
        assert _key(out / step) != key, step  # redone, not reused as unchanged
