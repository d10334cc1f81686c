"""Runs that can move: a run made with relative paths records the paths inside it relative to
the file that names them, so a copy in another folder is served and benchmarked from any
working folder."""

from __future__ import annotations

import json
import shutil

from pipelines.cli import main
from pipelines.serving.artifacts import load_engine, resolve_run

SYNTH = "synthetic:users=30,items=40,per_user=8,seed=3"
SMALL = ["--epochs", "1", "--user-hidden", "8", "--item-hidden", "8", "--id-dim", "4", "--out-dim", "4",
         "--history-len", "3", "--n-negatives", "8", "--threads", "1"]  # fmt: skip


def test_a_copied_run_is_served_and_benchmarked_from_another_folder(tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)  # every path below is relative, as a user types them
    main(
        ["train-student", "--dataset", SYNTH, "--no-teacher", *SMALL, "--out", "runs/shop/student"]
    )
    main(["compress", "--dataset", SYNTH, "--model", "runs/shop/student/model", "--finetune-epochs",
          "0", "--magnitude-sparsity", "0", "--int8", "all", "--threads", "1",
          "--out", "runs/shop/compressed"])  # fmt: skip
    comp = json.loads((work / "runs/shop/compressed/compression.json").read_text())
    assert comp["config"]["model"] == "../student/model"
    assert comp["outputs"]["int8"] == "int8"

    copy = tmp_path / "elsewhere" / "shop"
    shutil.copytree(work / "runs/shop", copy)
    shutil.rmtree(work / "runs")  # the original is gone: only the copy can answer
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    engine = load_engine(resolve_run(copy, model=copy / "compressed" / "int8"))
    assert engine.n_items == 40
    # a model saved without provenance is traced through compression.json to its student
    config = copy / "compressed" / "int8" / "config.json"
    meta = json.loads(config.read_text())
    meta.pop("provenance")
    config.write_text(json.dumps(meta))
    src = resolve_run(copy, model=copy / "compressed" / "int8")
    assert src.provenance[-1] == str(copy / "student" / "metrics.json")
    load_engine(src)
    rep = main(["benchmark", "--dataset", SYNTH, "--student-hard", str(copy / "student" / "model"),
                "--indexes", "--n-single", "3", "--bootstrap", "10", "--out", str(copy / "bench")])  # fmt: skip
    assert rep["config"]["student_hard"] == "../student/model"
