"""Nothing a user did not make is deleted: ``--overwrite`` replaces only a folder holding the
job's own artifact (its metadata file), anything else is refused; the check comes before any
work; stale temporaries of a kill during the final save are removed on the next run."""

from __future__ import annotations

import pytest

from common.io import ArtifactError, claim_output
from pipelines.cli import main

SYNTH = "synthetic:users=30,items=40,per_user=8"
SMALL = ["--epochs", "1", "--user-hidden", "8", "--item-hidden", "8", "--id-dim", "4", "--out-dim", "4",
         "--history-len", "3", "--n-negatives", "8", "--threads", "1"]  # fmt: skip


def test_claim_output_rules(tmp_path):
    assert claim_output(tmp_path / "new", "meta.json", overwrite=False, what="x")
    (tmp_path / "empty").mkdir()
    assert claim_output(tmp_path / "empty", "meta.json", overwrite=False, what="x")
    own = tmp_path / "own"
    own.mkdir()
    (own / "meta.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"already holds x \(meta.json\); pass --overwrite"):
        claim_output(own, "meta.json", overwrite=False, what="x")
    assert claim_output(own, "meta.json", overwrite=True, what="x") == own
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_text("mine")
    with pytest.raises(ArtifactError, match=r"not x \(no meta.json; found \['holiday.jpg'\]\)"):
        claim_output(foreign, "meta.json", overwrite=True, what="x")
    assert (foreign / "holiday.jpg").read_text() == "mine"
    stale = tmp_path / ".own.k1l2m3.tmp"
    stale.mkdir()
    claim_output(own, "meta.json", overwrite=True, what="x")
    assert not stale.exists()


def _fail(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_train_student_refuses_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"
    argv = ["train-student", "--dataset", SYNTH, "--no-teacher", *SMALL, "--out", str(out)]
    stale = out / ".model.a1b2c3.tmp"  # a kill during the final save
    stale.mkdir(parents=True)
    main(argv)
    assert not stale.exists() and (out / "model" / "config.json").exists()

    import pipelines.training.train_student as ts

    def no_work(*a, **k):
        raise AssertionError("the job started work before checking --out")

    monkeypatch.setattr(ts, "load_dataset", no_work)
    err = _fail(argv, capsys)
    assert f"{out / 'model'} already holds a student model" in err and "--overwrite" in err
    (out / "model" / "notes.txt").write_text("mine")  # a user's file in the model folder
    err = _fail([*argv, "--overwrite"], capsys)
    assert f"{out / 'model'} holds files that are not a student model" in err
    assert (out / "model" / "notes.txt").read_text() == "mine"
    monkeypatch.undo()
    (out / "model" / "notes.txt").unlink()
    main([*argv, "--overwrite"])  # its own artifact: replaced


def test_generate_labels_never_replaces_a_foreign_folder(tmp_path, capsys):
    out = tmp_path / "labels"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    argv = ["generate-labels", "--dataset", SYNTH, "--model", "minilm", "--out", str(out)]
    err = _fail([*argv, "--overwrite"], capsys)
    assert "holds files that are not a soft-label dataset" in err
    assert (out / "thesis.tex").read_text() == "mine"
    (out / "thesis.tex").unlink()
    partial = tmp_path / "labels.partial"
    partial.mkdir()
    (partial / "draft.txt").write_text("mine")
    err = _fail(argv, capsys)
    assert f"{partial} holds files that are not label shards" in err
    assert (partial / "draft.txt").read_text() == "mine"


def test_prepare_compress_benchmark_follow_the_same_rule(tmp_path, capsys):
    out = tmp_path / "p"
    argv = ["prepare", "--dataset", SYNTH, "--protocols", "temporal", "--out", str(out)]
    main(argv)
    assert "already holds statistics" in _fail(argv, capsys)
    main([*argv, "--overwrite"])
    other = tmp_path / "docs"
    other.mkdir()
    (other / "a.md").write_text("mine")
    for job, extra in (
        ("prepare", []),
        ("compress", ["--model", str(tmp_path / "m")]),
        ("benchmark", []),
    ):
        err = _fail([job, "--dataset", SYNTH, *extra, "--out", str(other), "--overwrite"], capsys)
        assert f"{other} holds files that are not" in err, job
    assert (other / "a.md").read_text() == "mine"
