"""Tiny finished runs (train-student + compress on synthetic data), laid out like a demo run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.core.config import make_config

DATASET = "synthetic:users=60,items=90,per_user=12,seed=5"
OTHER_DATASET = "synthetic:users=50,items=90,per_user=10,seed=6"


def make_run(out: Path, dataset: str = DATASET, seed: int = 0, out_dim: int = 16, **model) -> Path:
    """``out/student_distilled`` (model + metrics.json) and ``out/compressed`` (int8);
    ``model``: more TwoTowerConfig fields (e.g. ``user_encoder="sasrec"``)."""
    from pipelines.compression.compress import CompressConfig
    from pipelines.compression.compress import run as compress
    from pipelines.training.train_student import TrainStudentConfig
    from pipelines.training.train_student import run as train

    train(
        make_config(
            TrainStudentConfig,
            dataset=dataset,
            no_teacher=True,
            epochs=2,
            user_hidden=(32,),
            item_hidden=(32,),
            id_dim=16,
            out_dim=out_dim,
            history_len=10,
            n_negatives=16,
            seed=seed,
            threads=1,
            out=str(out / "student_distilled"),
            **model,
        )
    )
    compress(
        CompressConfig(
            model=str(out / "student_distilled" / "model"),
            dataset=dataset,
            out=str(out / "compressed"),
            finetune_epochs=0,
            magnitude_sparsity=0,
            int8="all",
            threads=1,
        )
    )
    return out


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run_a"))


@pytest.fixture(scope="session")
def run_dir_b(tmp_path_factory) -> Path:
    """Same data, another training seed: a good replacement for ``run_dir``."""
    return make_run(tmp_path_factory.mktemp("run_b"), seed=1)


@pytest.fixture(scope="session")
def run_other_data(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run_other"), dataset=OTHER_DATASET)


@pytest.fixture(scope="session")
def sasrec_run_dir(tmp_path_factory) -> Path:
    """A run whose student reads the history with SASRec (user id dropout on)."""
    return make_run(tmp_path_factory.mktemp("run_sasrec"), user_encoder="sasrec", seq_heads=2,
                    user_id_dropout=0.3)  # fmt: skip
