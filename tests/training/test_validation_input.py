"""Training (and its validation scoring) reads train only: the validation item of a
leave-last-out user never reaches the user tower during training."""

from __future__ import annotations

from pipelines.core.config import make_config
from pipelines.data import load_dataset, make_split
from pipelines.training import job_inputs
from pipelines.training import train_student as ts

DATASET = "synthetic:users=30,items=60,per_user=10,seed=7"


def test_train_student_reads_train_histories_only(tmp_path, monkeypatch):
    seen = []
    real = job_inputs.histories
    monkeypatch.setattr(
        job_inputs, "histories", lambda f, *a, **k: seen.append(f) or real(f, *a, **k)
    )
    ts.run(
        make_config(
            ts.TrainStudentConfig, dataset=DATASET, protocol="temporal", no_teacher=True,
            epochs=1, user_hidden=(8,), item_hidden=(8,), id_dim=4, out_dim=4, history_len=4,
            n_negatives=4, threads=1, out=str(tmp_path / "st"),
        )
    )  # fmt: skip
    split = make_split(load_dataset(DATASET), "temporal", 0)
    later = set(zip(split.valid.user, split.valid.item)) | set(
        zip(split.test.user, split.test.item)
    )
    train = set(zip(split.train.user, split.train.item))
    assert seen
    for frame in seen:
        pairs = set(zip(frame.user, frame.item))
        assert pairs == train and not (pairs & later)
