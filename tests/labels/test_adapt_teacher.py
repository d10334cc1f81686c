from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.data import load_dataset, training_split
from pipelines.labels.adapt_teacher import AdaptTeacherConfig, _examples
from pipelines.labels.adapt_teacher import run as adapt
from pipelines.labels.generate_labels import GenerateLabelsConfig
from pipelines.labels.generate_labels import run as generate
from pipelines.labels.schema import columns, load_labels

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
    labels_cfg = GenerateLabelsConfig(
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
    meta = generate(labels_cfg)
    assert meta["teacher"]["adapter"] == "../adapter"  # relative to the labels: a run can move
    # an adapter fit on the train part of another split has seen this split's test items
    from common.io import ArtifactError

    other_split = {**labels_cfg.__dict__, "split_seed": 1, "out": str(tmp_path / "l1")}
    with pytest.raises(
        ArtifactError, match=r"the adapter was made for the random split with seed 0"
    ):
        generate(GenerateLabelsConfig(**other_split))
    # the adapter changes the teacher's scores: the same job without it scores differently
    base = generate(
        GenerateLabelsConfig(
            **{**labels_cfg.__dict__, "adapter": None, "out": str(tmp_path / "labels_base")}
        )
    )
    assert base["teacher"]["adapter"] is None
    with_adapter = _text_scores(tmp_path / "labels")
    without = _text_scores(tmp_path / "labels_base")
    assert with_adapter.keys() == without.keys()
    diffs = np.array([with_adapter[k] - without[k] for k in with_adapter])
    assert np.abs(diffs).max() > 1e-4


def _text_scores(folder) -> dict:
    """(user, item) -> the teacher's standardised text score, before Platt (the mix's z)."""
    ds, meta = load_labels(folder)
    mix = meta["teacher"]["mix"]
    t = columns(ds)
    z = (t["score"].astype(np.float64) - mix["platt_b"]) / mix["platt_a"]
    return {(int(u), int(i)): v for u, i, v in zip(t["user"], t["item"], z)}


@pytest.mark.parametrize(
    "teacher,fixture", [("embedding", "tiny_st_dir"), ("causal_lm", "tiny_llama_dir")]
)
def test_adaptation_loss_falls_on_a_toy_task(tmp_path, request, teacher, fixture):
    # a handful of examples in one batch, seen again every step: the loss must go down
    res = adapt(
        AdaptTeacherConfig(
            dataset=DATASET,
            teacher=teacher,
            model=str(request.getfixturevalue(fixture)),
            max_users=3,
            positives_per_user=2,
            negatives_per_user=2,
            history_items=4,
            max_seq_length=32,
            max_history_tokens=64,
            batch_size=64,
            epochs=25,
            lr=1e-2,
            threads=1,
            out=str(tmp_path / "adapter"),
        )
    )
    curve = res["metrics"]["loss_curve"]
    assert len(curve) == 25
    # dropout and in-batch shuffles make single steps noisy: compare the ends of the curve
    assert np.mean(curve[-5:]) < 0.85 * np.mean(curve[:3]), curve  # a flat curve: ~1.0x


def test_bad_teacher_is_named():
    with pytest.raises(ValueError, match="teacher is 'bert'; allowed values"):
        AdaptTeacherConfig(teacher="bert")
