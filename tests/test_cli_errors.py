"""The CLI's errors: one line naming what is wrong, where and what was expected, a documented
exit code, a traceback only with --debug; library errors on a user's file wrapped with its
path (empty CSV, truncated safetensors / .arrow / .npy / FAISS index, a full disk)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from common.io import ArtifactError, artifact_path, load_npy
from pipelines.cli import main

SYNTH = "synthetic:users=30,items=40,per_user=8"


def fail(argv, capsys, code=2, usage=False) -> str:
    """Run the CLI, expect exit ``code``; returns the error line (checked: no traceback, and
    one line; a flag error (``usage``) adds one line, the hint ``see recdistill <job> --help``,
    and no usage)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if usage:
        assert lines[1:] == [f"see recdistill {argv[0]} --help"], err
        lines = lines[:1]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"recdistill {argv[0]}: error: ")
    return lines[0]


def test_bad_data_is_one_line_exit_2_and_debug_shows_the_traceback(tmp_path, capsys):
    p = tmp_path / "i.csv"
    p.write_text("user_id,item_id,rating\n1,a,5\n1,b,\n")
    err = fail(["prepare", "--dataset", str(p), "--out", str(tmp_path / "o")], capsys)
    assert f"{p}: line 3, column 'rating' is empty; expected a finite number" in err
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--dataset", str(p), "--out", str(tmp_path / "o"), "--debug"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "DataError" in err
    assert err.strip().splitlines()[-1].startswith("recdistill prepare: error: ")


def test_empty_file_and_bad_own_data_flags(tmp_path, capsys):
    p = tmp_path / "empty.csv"
    p.write_text("")
    err = fail(["prepare", "--dataset", str(p), "--out", str(tmp_path / "o")], capsys)
    assert f"{p}: the file is empty" in err
    err = fail(["prepare", "--items", "x.csv"], capsys, usage=True)  # --dataset is ml-100k
    assert "apply to your own files, but --dataset is 'ml-100k'" in err
    err = fail(["prepare", "--dataset", str(p), "--columns", "uid"], capsys, usage=True)
    assert "'uid' is not ours=theirs" in err


def test_full_disk_names_the_target_and_exits_3(tmp_path, capsys, monkeypatch):
    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", no_space)
    out = tmp_path / "o"
    err = fail(
        ["prepare", "--dataset", SYNTH, "--protocols", "temporal", "--out", str(out)], capsys, 3
    )
    assert f"{out / 'stats.json'}: No space left on device; free some space" in err
    assert ".tmp" not in err  # the target, not the hidden temporary file
    monkeypatch.undo()
    assert not out.exists() or not list(out.iterdir())


def _tiny_student(folder: Path) -> Path:
    from student.model import TwoTower, TwoTowerConfig

    c = TwoTowerConfig(
        n_users=30,
        n_items=40,
        id_dim=4,
        history_len=2,
        user_hidden=(8,),
        item_hidden=(8,),
        out_dim=4,
    )
    return TwoTower(c).save_pretrained(folder)


def test_truncated_safetensors_is_named(tmp_path, capsys):
    model = _tiny_student(tmp_path / "model")
    w = model / "model.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    err = fail(
        ["compress", "--model", str(model), "--dataset", SYNTH, "--out", str(tmp_path / "c")],
        capsys,
    )
    assert f"{w}: unreadable or truncated safetensors file" in err


def test_truncated_arrow_labels_are_named(tmp_path):
    from datasets import Dataset

    from pipelines.labels.schema import META_FILE, SCHEMA_VERSION, LabelError, features, load_labels

    n = 200
    rows = {
        "user_id": [str(i % 10) for i in range(n)],
        "item_id": [str(i) for i in range(n)],
        "user": [i % 10 for i in range(n)],
        "item": list(range(n)),
        "score": [0.5] * n,
        "prob": [0.6] * n,
        "observed": [False] * n,
        "rank": [i // 10 for i in range(n)],
        "source": ["uniform"] * n,
    }
    labels = tmp_path / "labels"
    Dataset.from_dict(rows, features=features()).save_to_disk(str(labels))
    (labels / META_FILE).write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
    load_labels(labels)  # whole: fine
    arrow = next(labels.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:300])
    with pytest.raises(LabelError, match=r"label table is unreadable or truncated"):
        load_labels(labels)


def test_truncated_npy_and_names_outside_the_folder(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(1000, dtype=np.float32))
    assert load_npy(p).shape == (1000,)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=r"a.npy: unreadable or truncated .npy file"):
        load_npy(p)
    with pytest.raises(ArtifactError, match=r"names '../x.npy'; expected a file name inside"):
        artifact_path(tmp_path, "../x.npy", "teacher_topk")
    with pytest.raises(ArtifactError, match=r"no absolute path"):
        artifact_path(tmp_path, "/etc/passwd", "teacher_topk")
    assert artifact_path(tmp_path, "x.npy") == tmp_path / "x.npy"


def test_faiss_index_checksum_and_truncation_are_named(tmp_path):
    from student.serving.config import IndexConfig
    from student.serving.index import INDEX_FILE, META_FILE, ItemIndex

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    index = ItemIndex.build(emb, np.arange(50), IndexConfig(kind="flat"))
    index.provenance = {"dataset": {"fingerprint": "abc"}}
    index.save(tmp_path / "idx")
    assert ItemIndex.load(tmp_path / "idx").provenance == index.provenance
    f = tmp_path / "idx" / INDEX_FILE
    f.write_bytes(f.read_bytes()[:64])
    with pytest.raises(ValueError, match=r"index.faiss: sha256 differs from the one meta.json"):
        ItemIndex.load(tmp_path / "idx")
    meta_path = tmp_path / "idx" / META_FILE  # a checksum is mandatory
    meta = json.loads(meta_path.read_text())
    del meta["index_sha256"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"index.faiss: .*records no index_sha256"):
        ItemIndex.load(tmp_path / "idx")
