"""``--overwrite`` replaces only a job's own files: a folder that also holds others is refused
and they are named; an ``--out`` inside (or holding) one of the job's inputs is refused before
any work; a corrupt metadata file's error names its path."""

from __future__ import annotations

import json

import pytest

import common.io as cio
from pipelines.cli import main

SYNTH = "synthetic:users=30,items=40,per_user=8"
LABEL_FLAGS = ["--dataset", SYNTH, "--n-negatives", "8", "--max-positives", "5", "--eval-users", "10",
               "--max-seq-length", "16", "--threads", "1"]  # fmt: skip
SMALL = ["--epochs", "1", "--user-hidden", "8", "--item-hidden", "8", "--id-dim", "4", "--out-dim", "4",
         "--history-len", "3", "--n-negatives", "8", "--threads", "1"]  # fmt: skip


def _fail(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def LABELS(tiny_st_dir):
    return ["generate-labels", "--model", str(tiny_st_dir), *LABEL_FLAGS]


@pytest.fixture(scope="module")
def labels(tmp_path_factory, LABELS):
    out = tmp_path_factory.mktemp("run") / "labels"
    main([*LABELS, "--out", str(out)])
    return out


def test_overwrite_keeps_a_users_files_in_the_label_folder(labels, LABELS, capsys):
    (labels / "notes.txt").write_text("mine")
    (labels / "student").mkdir()
    (labels / "student" / "metrics.json").write_text("{}")
    try:
        err = _fail([*LABELS, "--n-negatives", "6", "--out", str(labels), "--overwrite"], capsys)
        assert f"{labels} holds files that are not a soft-label dataset" in err
        assert "'notes.txt'" in err and "'student'" in err
        assert (labels / "notes.txt").read_text() == "mine"
        assert (labels / "student" / "metrics.json").exists()
    finally:
        (labels / "notes.txt").unlink()
        (labels / "student" / "metrics.json").unlink()
        (labels / "student").rmdir()
    main([*LABELS, "--n-negatives", "6", "--out", str(labels), "--overwrite"])  # own files only
    main([*LABELS, "--out", str(labels), "--overwrite"])


def test_out_inside_an_input_is_refused_before_any_work(labels, LABELS, tmp_path, capsys):
    model = tmp_path / "s" / "model"
    model.mkdir(parents=True)  # the check comes before the model is read
    cases = [
        (["train-student", "--dataset", SYNTH, "--labels", str(labels), *SMALL], labels / "student", "--labels"),
        (["compress", "--dataset", SYNTH, "--model", str(model)], model / "compressed", "--model"),
        (["benchmark", "--dataset", SYNTH, "--labels", str(labels)], labels / "x", "--labels"),
        ([*LABELS, "--adapter", str(tmp_path / "s")], tmp_path / "s" / "labels", "--adapter"),
    ]  # fmt: skip
    for argv, out, flag in cases:
        err = _fail([*argv, "--out", str(out)], capsys)
        assert f"--out {out} is inside" in err and f"input {flag}" in err, argv[0]
        assert not out.exists(), argv[0]
    with pytest.raises(cio.ArtifactError, match="holds"):
        cio.refuse_out_inside(tmp_path, {"--model": model})
    (tmp_path / "ab").mkdir()  # a sibling whose name starts with out's: not inside it
    cio.refuse_out_inside(tmp_path / "a", {"--model": tmp_path / "ab", "--labels": None})


def test_a_corrupt_label_metadata_file_is_named(LABELS, tmp_path, capsys):
    out = tmp_path / "labels"
    (out).mkdir()
    (out / "recdistill_labels.json").write_text('{"job_hash": ')
    err = _fail([*LABELS, "--out", str(out)], capsys)
    assert f"{out / 'recdistill_labels.json'}: not valid JSON (line 1 column" in err


def test_read_json_names_the_path(tmp_path):
    p = tmp_path / "meta.json"
    with pytest.raises(FileNotFoundError, match=f"{p}: not found; expected x"):
        cio.read_json(p, "x")
    p.write_text("[1, 2]")
    with pytest.raises(cio.ArtifactError, match=f"{p}: holds a JSON list, expected an object"):
        cio.read_json(p, "x")
    p.write_text(json.dumps({"a": 1}))
    assert cio.read_json(p, "x") == {"a": 1}


@pytest.mark.parametrize(
    ("job", "marker", "extra"),
    [
        ("prepare", "stats.json", []),
        ("adapt-teacher", "adapt_teacher.json", []),
        ("train-student", "metrics.json", ["--no-teacher"]),
        ("compress", "compression.json", []),
        ("benchmark", "report.json", []),
        ("bench-scale", "bench_scale.json", []),
    ],
)
def test_every_job_overwrites_only_its_own_files(job, marker, extra, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / marker).write_text("{}")  # the job's own artifact: --overwrite would replace it
    (out / "notes.txt").write_text("mine")  # ... but not a folder that also holds this
    data = [] if job == "bench-scale" else ["--dataset", SYNTH]
    err = _fail([job, *data, *extra, "--out", str(out), "--overwrite"], capsys)
    assert f"{out} holds files that are not" in err and "'notes.txt'" in err
    assert (out / "notes.txt").read_text() == "mine"
