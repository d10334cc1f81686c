from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.data import load_dataset, training_split
from pipelines.labels.adapt_teacher import AdaptTeacherConfig, _examples
from pipelines.labels.adapt_teacher import run as adapt
from pipelines.labels.generate_labels import GenerateLabelsConfig
from pipelines.labels.generate_labels import run as generate

DATASET = "synthetic:users=30,items=50,per_user=10,seed=6"


def test_examples_come_from_train_only():
    data = load_dataset(DATASET)
    split = training_split(data, "random", 0)
    c = AdaptTeacherConfig(dataset=DATASET, teacher="causal_lm", max_users=0)
    ex = _examples(c, data, split, np.random.default_rng(0))
    train = set(zip(split.train.user, split.train.item))
    for u, j, hist, label in ex:
        assert ((u, j) in train) == bool(label)  # negatives: anything outside train
        assert j not in hist or label == 0
        assert all((u, i) in train for i in hist)
    assert {label for *_, label in ex} == {0, 1}


@pytest.mark.parametrize(
    "teacher,fixture", [("embedding", "tiny_st_dir"), ("causal_lm", "tiny_llama_dir")]
)
def test_adapter_trains_and_feeds_label_generation(tmp_path, request, teacher, fixture):
    model = request.getfixturevalue(fixture)
    out = tmp_path / "adapter"
    res = adapt(
        AdaptTeacherConfig(
            dataset=DATASET,
            teacher=teacher,
            model=str(model),
            max_users=6,
            positives_per_user=2,
            negatives_per_user=2,
            history_items=4,
            max_seq_length=32,
            max_history_tokens=64,
            batch_size=4,
            max_steps=2,
            threads=1,
            out=str(out),
        )
    )
    assert (out / "adapter_config.json").exists()
    assert json.loads((out / "adapt_teacher.json").read_text())["examples"] == res["examples"]
    meta = generate(
        GenerateLabelsConfig(
            dataset=DATASET,
            teacher=teacher,
            model=str(model),
            adapter=str(out),
            max_users=5,
            n_negatives=3,
            max_positives=2,
            eval_users=5,
            eval_negatives=5,
            collab="none",
            popularity=False,
            max_seq_length=32,
            history_items=4,
            max_history_tokens=64,
            batch_size=4,
            threads=1,
            out=str(tmp_path / "labels"),
        )
    )
    assert meta["teacher"]["adapter"] == str(out)


def test_bad_teacher_is_named():
    with pytest.raises(ValueError, match="teacher='bert'"):
        AdaptTeacherConfig(teacher="bert")
