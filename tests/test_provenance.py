"""Provenance: students and compressed students record the dataset and split fingerprints they
were made from; compress and benchmark refuse a mismatch naming both."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main
from pipelines.data import load_dataset, training_split
from student.model import read_provenance

SYNTH = "synthetic:users=30,items=40,per_user=8,seed=4"
SMALL = ["--epochs", "1", "--user-hidden", "8", "--item-hidden", "8", "--id-dim", "4", "--out-dim", "4",
         "--history-len", "3", "--n-negatives", "8", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("prov") / "s"
    main(["train-student", "--dataset", SYNTH, "--split-seed", "1", "--no-teacher", *SMALL,
          "--out", str(out)])  # fmt: skip
    return out / "model"


def _fail(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_student_records_dataset_and_split(student):
    data = load_dataset(SYNTH)
    split = training_split(data, "random", 1)
    prov = read_provenance(student)
    assert prov["dataset"]["fingerprint"] == data.fingerprint()
    assert prov["split"] == {"protocol": "random", "seed": 1, "fingerprint": split.fingerprint()}


def test_benchmark_on_another_split_seed_is_refused(student, tmp_path, capsys):
    base = ["benchmark", "--dataset", SYNTH, "--student-distilled", str(student),
            "--indexes", "--n-single", "3", "--bootstrap", "10"]  # fmt: skip
    err = _fail([*base, "--split-seed", "0", "--out", str(tmp_path / "b0")], capsys)
    want = read_provenance(student)["split"]["fingerprint"]
    assert (
        f"{student}: the student_distilled model was made for the random split with seed 1" in err
    )
    assert want in err and "with seed 0" in err
    rep = main([*base, "--split-seed", "1", "--out", str(tmp_path / "b1")])
    assert "student_distilled" in rep["models"]


def test_compress_refuses_other_data_and_records_provenance(student, tmp_path, capsys):
    other = "synthetic:users=30,items=40,per_user=8,seed=5"  # same sizes, other interactions
    argv = ["compress", "--model", str(student), "--finetune-epochs", "0", "--int8", "all",
            "--magnitude-sparsity", "0", "--threads", "1"]  # fmt: skip
    err = _fail(
        [*argv, "--dataset", other, "--split-seed", "1", "--out", str(tmp_path / "c0")], capsys
    )
    assert "the student was made for dataset 'synthetic'" in err
    assert load_dataset(other).fingerprint() in err and load_dataset(SYNTH).fingerprint() in err
    out = tmp_path / "c"
    main([*argv, "--dataset", SYNTH, "--split-seed", "1", "--out", str(out)])
    for name in ("pruned", "int8"):
        assert read_provenance(out / name) == read_provenance(student)
    assert json.loads((out / "compression.json").read_text())["split"]["seed"] == 1
    # a compressed student is checked by the benchmark too
    err = _fail(["benchmark", "--dataset", SYNTH, "--student-int8", str(out / "int8"),
                 "--indexes", "--out", str(tmp_path / "b")], capsys)  # fmt: skip
    assert "the student_int8 model was made for the random split with seed 1" in err


def test_a_student_without_provenance_is_refused_unless_allowed(tmp_path, caplog, capsys):
    from student.model import TwoTower, TwoTowerConfig

    model = TwoTower(TwoTowerConfig(n_users=30, n_items=40, id_dim=4, history_len=2,
                                    user_hidden=(8,), item_hidden=(8,), out_dim=4))  # fmt: skip
    old = tmp_path / "old"
    model.save_pretrained(old)
    meta = json.loads((old / "config.json").read_text())
    assert not meta["provenance"]  # saved outside a job: nothing recorded
    bench = ["benchmark", "--dataset", SYNTH, "--student-hard", str(old), "--indexes",
             "--n-single", "3", "--bootstrap", "10"]  # fmt: skip
    err = _fail([*bench, "--out", str(tmp_path / "b0")], capsys)
    assert f"{old}: the student_hard model records no dataset or split fingerprint" in err
    assert "retrain it" in err and "--allow-unchecked" in err
    assert not (tmp_path / "b0").exists()
    comp = ["compress", "--dataset", SYNTH, "--model", str(old), "--finetune-epochs", "0",
            "--magnitude-sparsity", "0", "--threads", "1"]  # fmt: skip
    err = _fail([*comp, "--out", str(tmp_path / "c0")], capsys)
    assert f"{old}: the student records no dataset or split fingerprint" in err
    main([*comp, "--allow-unchecked", "--out", str(tmp_path / "c")])
    rep = main([*bench, "--allow-unchecked", "--out", str(tmp_path / "b")])
    assert rep["models"]["student_hard"]["provenance"] == "unchecked"
    assert "provenance" not in rep["models"]["popularity"]
    saved = json.loads((tmp_path / "b" / "report.json").read_text())
    assert saved["models"]["student_hard"]["provenance"] == "unchecked"
    md = (tmp_path / "b" / "report.md").read_text()
    assert "Note: student_hard recorded no dataset or split fingerprint" in md
    assert "records no dataset or split fingerprint" in caplog.text
