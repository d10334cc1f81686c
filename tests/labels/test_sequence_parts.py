"""The sequence-aware teacher parts (transition, recency-weighted collaborative), the mix that
is never worse than a part alone, and the teacher's test ranking read from train + valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.baselines.collab import fit_collab
from pipelines.baselines.ease import EASE
from pipelines.baselines.recency import RecencyCollab, recency_rows
from pipelines.baselines.transition import Transition, last_items, transition_matrix
from pipelines.data import load_dataset, make_split, training_split
from pipelines.evaluation import segments
from pipelines.evaluation.teacher import teacher_scorers
from pipelines.labels.config import GenerateLabelsConfig
from pipelines.labels.generate_labels import run
from pipelines.labels.parts import build_parts
from pipelines.labels.teacher import fit_mix, list_ndcg

N_ITEMS, LENGTH = 30, 8


def frame(rows):
    """(user, item) rows in split order, timestamps 0.. per user."""
    f = pd.DataFrame(rows, columns=["user", "item"])
    f["timestamp"] = f.groupby("user").cumcount()
    f["rating"] = 1.0
    return f


def test_transition_counts_consecutive_items_and_reads_the_last_ones():
    train = frame([(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 4), (2, 2)])
    P = transition_matrix(train, 5).toarray()
    np.testing.assert_allclose(P[1], [0, 0, 1, 0, 0])  # 1 -> 2 twice
    np.testing.assert_allclose(P[2], [0, 0, 0, 0.5, 0.5])  # 2 -> 3, 2 -> 4
    assert P[3].sum() == 0 and P[4].sum() == 0  # last items are followed by nothing
    assert last_items(train, 3, 2, 5).tolist() == [[3, 2], [4, 2], [2, 5]]
    assert Transition.scores_sequences and not Transition.scores_histories
    m = Transition(train, 3, 5, window=2, decay=0.5)
    # user 2's last item is 2: half 3, half 4; user 0: P[3] + 0.5 P[2]
    np.testing.assert_allclose(m(np.array([2, 0])), [[0, 0, 0, 0.5, 0.5], [0, 0, 0, 0.25, 0.25]])
    pairs = m.score_pairs(np.array([2, 0, 1]), np.array([3, 4, 0]))
    np.testing.assert_allclose(pairs, [0.5, 0.25, 0.0])
    # another input (train + valid): user 2's last item is now 1, so 2 comes next
    known = frame([(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 4), (2, 2), (2, 1)])
    np.testing.assert_allclose(m.from_sequences(known)(np.array([2]))[0], [0, 0, 1, 0.25, 0.25])


def test_transition_pairs_are_the_dense_rows_cells():
    # the pair lookup (binary search over P's cells) against the dense rows, every cell of
    # the first users: held cells and the zeros between them
    data = load_dataset("synthetic:users=60,items=40,per_user=12,seed=2")
    split = training_split(data, "temporal", 0)
    m = Transition(split.train, 60, 40, window=3, decay=0.5)
    users = np.repeat(np.arange(20), 40)
    items = np.tile(np.arange(40), 20)
    dense = m(np.arange(20))
    assert (dense > 0).sum() > 50 and (dense == 0).sum() > 50
    np.testing.assert_allclose(m.score_pairs(users, items), dense.ravel(), rtol=1e-6)
    empty = Transition(split.train.iloc[:0], 60, 40)
    assert not empty.score_pairs(users[:5], items[:5]).any()


def test_recency_row_weighs_by_position_from_the_end_and_decay_one_is_the_model():
    train = frame([(0, 0), (0, 1), (0, 2), (1, 2), (1, 0)])
    rows = recency_rows(train, 2, 3, 0.5).toarray()
    np.testing.assert_allclose(rows, [[0.25, 0.5, 1.0], [1.0, 0.0, 0.5]])
    data = load_dataset("synthetic:users=40,items=30,per_user=10,seed=1")
    split = training_split(data, "temporal", 0)
    ease = EASE(split.matrix("train"), 50.0)
    users = np.arange(10)
    np.testing.assert_allclose(RecencyCollab(ease, split.train, 40, 1.0)(users), ease(users),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    weighted = RecencyCollab(ease, split.train, 40, 0.5)
    x = recency_rows(split.train, 40, 30, 0.5)
    np.testing.assert_allclose(weighted(users), x[users] @ ease.B, rtol=1e-5, atol=1e-5)
    items = np.arange(10) % 30
    np.testing.assert_allclose(weighted.score_pairs(users, items),
                               weighted(users)[users, items], rtol=1e-5)  # fmt: skip


def test_recency_on_als_folds_the_weighted_row_in():
    data = load_dataset("synthetic:users=40,items=30,per_user=10,seed=1")
    split = training_split(data, "temporal", 0)
    als, _ = fit_collab(split, "als")
    scorer = RecencyCollab(als, split.train, 40, 0.8)
    vec = als.fold_in(recency_rows(split.train, 40, 30, 0.8))
    np.testing.assert_allclose(scorer(np.arange(5)), vec[:5] @ als.item_factors.T, rtol=1e-4)


def test_the_mix_is_at_least_each_part_alone_on_validation():
    """A part better alone than the collaborative one anchors the mix (was: ease always)."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 11)
    labels = np.tile(np.r_[1.0, np.zeros(10)], 40)
    parts = {
        "ease": rng.random(len(users)),  # noise
        "transition": labels * 3 + rng.random(len(users)) * 2.5,  # mostly right
        "popularity": rng.random(len(users)),
    }
    mix, _ = fit_mix(parts, users, labels)
    mixed = list_ndcg(users, labels, mix.z(parts))
    assert mix.weights["transition"] == 1.0
    for name, s in parts.items():
        assert mixed >= list_ndcg(users, labels, s) - 1e-12, name


def test_temporal_teacher_mixes_the_sequence_parts_by_default(tmp_path, tiny_st_dir):
    base = dict(dataset="synthetic:users=30,items=40,per_user=10,seed=3", model=str(tiny_st_dir))
    temporal = GenerateLabelsConfig(**base, protocol="temporal")
    random = GenerateLabelsConfig(**base)
    assert temporal.sequence_part("transition") and temporal.sequence_part("recency")
    assert not random.sequence_part("transition") and not random.sequence_part("recency")
    assert GenerateLabelsConfig(**base, transition="on").sequence_part("transition")
    assert not GenerateLabelsConfig(**base, protocol="temporal", collab="none").sequence_part(
        "recency"
    )
    with pytest.raises(ValueError, match="recency='on'.*collab"):
        GenerateLabelsConfig(**base, recency="on", collab="none")
    data = load_dataset(base["dataset"])
    split = training_split(data, "temporal", 0)
    parts = build_parts(temporal, data, split)
    assert [p.name for p in parts] == ["text", "ease", "popularity", "ease_recency", "transition"]
    assert parts[3].scorer.model is parts[1].model  # the collaborative part's fit, reused


def chain_csv(tmp: Path) -> Path:
    """Every user walks the catalogue in order from their own start: item i is always
    followed by item i + 1, so the next item is the successor of the last one known."""
    rows = [f"u{u:02d},i{(u + t) % N_ITEMS:02d},{t}" for u in range(N_ITEMS) for t in range(LENGTH)]
    path = tmp / "chain.csv"
    path.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def chain_labels(tmp_path_factory, tiny_st_dir):
    tmp = tmp_path_factory.mktemp("chain")
    cfg = GenerateLabelsConfig(
        dataset=str(chain_csv(tmp)),
        protocol="temporal",
        model=str(tiny_st_dir),
        n_negatives=8,
        max_positives=5,
        eval_users=N_ITEMS,
        eval_negatives=10,
        threads=1,
        max_seq_length=32,
        out=str(tmp / "labels"),
        collab="none",
        popularity=False,
    )  # fmt: skip  (EASE^R ties the transitions on sampled validation lists: left out)
    return cfg, run(cfg)


def test_the_teachers_test_ranking_reads_the_validation_item(chain_labels):
    cfg, meta = chain_labels
    assert meta["teacher"]["parts"] == ["text", "transition"]
    quality = meta["teacher_quality"]["parts"]
    assert quality["transition"]["list_ndcg@10"] == 1.0 and quality["mix"]["list_ndcg@10"] == 1.0
    assert meta["teacher"]["mix"]["weights"]["transition"] == 1.0
    assert meta["teacher"]["signals"]["transition"]["window"] >= 1  # its fit, recorded
    data = load_dataset(cfg.dataset)
    split = make_split(data, "temporal", 0)
    valid = split.valid.set_index("user")["item"]
    test = split.test.set_index("user")["item"]
    out = Path(cfg.out)
    train_input = np.load(out / meta["teacher_topk"])
    test_input = np.load(out / meta["teacher_topk_test"])
    ranked = N_ITEMS - (LENGTH - 1)  # past them, a small catalogue's excluded items (-inf)
    for u in range(data.n_users):
        # from train, the next item is the validation one; from train + valid, the test one
        assert train_input[u, 0] == valid[u]
        assert test_input[u, 0] == test[u] and valid[u] not in test_input[u, :ranked]
    seg = segments.test_segment(split, 0, 0)
    (teacher,) = teacher_scorers(cfg.out, meta, data, split)
    scored = teacher.score(seg, bootstrap=10)
    assert scored.means["ndcg@10"] == 1.0 and teacher.info["test_input"] == "train + valid"
    assert "teacher_input_note" not in scored.note


def test_old_labels_without_the_test_ranking_fall_back_with_a_note(chain_labels):
    cfg, meta = chain_labels
    data = load_dataset(cfg.dataset)
    split = make_split(data, "temporal", 0)
    old = {k: v for k, v in meta.items() if k != "teacher_topk_test"}
    (teacher,) = teacher_scorers(cfg.out, old, data, split)
    scored = teacher.score(segments.test_segment(split, 0, 0), bootstrap=10)
    assert teacher.info["test_input"] == "train"
    assert "reads train only" in scored.note["teacher_input_note"]
    assert scored.means["ndcg@10"] < 1.0  # its first item is the (excluded) validation one


def test_benchmark_lists_the_transition_model_read_from_train_and_valid(tmp_path):
    from pipelines.evaluation.benchmark import BenchmarkConfig
    from pipelines.evaluation.benchmark import run as bench

    report = bench(
        BenchmarkConfig(dataset=str(chain_csv(tmp_path)), protocol="temporal", indexes=(),
                        bootstrap=10, n_single=2, out=str(tmp_path / "bench"))
    )  # fmt: skip
    row = report["models"]["transition"]  # from train alone its first item is the valid one
    assert row["ndcg@10"] == 1.0 and row["transition"]["window"] >= 1


def test_a_tie_earns_no_credit_in_the_validation_ndcg():
    """Positives are listed first in the validation pairs: a part scoring every candidate
    alike got NDCG 1 (was: ties in pair order)."""
    users = np.repeat(np.arange(3), 5)
    labels = np.tile(np.r_[1.0, np.zeros(4)], 3)
    flat = list_ndcg(users, labels, np.zeros(15))
    assert flat == pytest.approx(1 / np.log2(6))  # the positive ranked 5th of 5
    assert list_ndcg(users, labels, labels) == 1.0
