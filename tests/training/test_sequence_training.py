"""Training a sequence-aware student: every position predicts its next item, a step is a
batch of users, the soft terms and the CLI work as for the mean tower."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.core.config import make_config
from pipelines.training.batch import ObjectiveInputs, Step
from pipelines.training.loop import Schedule, _sequence_batches
from pipelines.training.terms import HardTerm
from pipelines.training.train_student import TrainStudentConfig, run
from student.losses import accidental_hit_mask, sampled_softmax_loss
from student.model import TwoTower, TwoTowerConfig

PAD = 12


def _model(encoder: str = "sasrec") -> TwoTower:
    torch.manual_seed(0)
    config = TwoTowerConfig(n_users=4, n_items=PAD, history_len=5, id_dim=8, out_dim=4,
                            user_hidden=(8,), item_hidden=(8,), user_encoder=encoder)  # fmt: skip
    return TwoTower(config).eval()


def test_sequence_batches_give_the_next_item_of_every_position():
    # most recent first: user 0 lived 1, 2, 3, 4 (4 last); user 2 has one item, no pair
    seqs = torch.tensor([[4, 3, 2, 1, PAD, PAD], [7, 6, 5, 4, 3, 2], [9, PAD, PAD, PAD, PAD, PAD],
                         [PAD] * 6])  # fmt: skip
    model = _model()
    schedule = Schedule(epochs=1, patience=1, batch_size=5, n_negatives=3)  # 1 user a step
    steps, batches = _sequence_batches(schedule, model, seqs, np.random.default_rng(0))
    got = {int(u[0]): (h[0].tolist(), pos[0].tolist()) for u, h, pos in batches}
    assert steps == 2 and set(got) == {0, 1}  # every user with an (input, next) pair, once
    assert got[0] == ([3, 2, 1, PAD, PAD], [4, 3, 2, PAD, PAD])
    assert got[1] == ([6, 5, 4, 3, 2], [7, 6, 5, 4, 3])


@pytest.mark.parametrize("encoder", ["sasrec", "gru"])
def test_hard_term_scores_every_real_position_against_its_next_item(encoder):
    model = _model(encoder)
    users = torch.tensor([0, 1])
    hist = torch.tensor([[3, 2, 1, PAD, PAD], [6, 5, 4, 3, 2]])
    pos = torch.tensor([[4, 3, 2, PAD, PAD], [7, 6, 5, 4, 3]])
    neg = torch.tensor([0, 8, 9])
    p = np.full(PAD, 1.0 / PAD)
    inputs = ObjectiveInputs(torch.full((4, 5), PAD), p, p)
    step = Step(model, np.random.default_rng(0), inputs, users, hist, pos, neg)
    loss = HardTerm("softmax", n_negatives=3)(step)
    # by hand: each real position (b, j) encoded alone from the items up to it
    rows, targets = [], []
    for b in range(2):
        for j in range(5):
            if hist[b, j] != PAD:
                older = torch.full((1, 5), PAD)
                older[0, : 5 - j] = hist[b, j:]
                rows.append(model.encode_users(users[b : b + 1], older)[0])
                targets.append(int(pos[b, j]))
    emb, t = torch.stack(rows), torch.tensor(targets)
    assert len(t) == 8
    cand = torch.cat([t, neg])
    scores = model.score(emb, model.encode_items(cand))
    q = torch.as_tensor(np.log(len(t) * p[cand] + 3 * p[cand]), dtype=torch.float32)
    want = sampled_softmax_loss(scores[torch.arange(8), torch.arange(8)], scores, q[:8], q,
                                accidental_hit_mask(t, cand))  # fmt: skip
    assert torch.allclose(loss, want, atol=1e-5)


SMALL = dict(dataset="synthetic:users=40,items=30,per_user=12,seed=3", epochs=2, patience=2,
             batch_size=40, id_dim=8, user_hidden=(16,), item_hidden=(16,), out_dim=8,
             history_len=8, n_negatives=8, threads=1, no_teacher=True)  # fmt: skip


@pytest.mark.parametrize("encoder", ["sasrec", "gru"])
def test_train_student_with_a_sequence_encoder_saves_it(tmp_path, encoder):
    res = run(make_config(TrainStudentConfig, **SMALL, user_encoder=encoder, user_id_dropout=0.3,
                          out=str(tmp_path / "s")))  # fmt: skip
    assert res["config"]["model"]["user_encoder"] == encoder
    assert np.isfinite(res["history"][-1]["loss_hard"])
    model = TwoTower.from_pretrained(tmp_path / "s" / "model")
    assert model.config.user_encoder == encoder and hasattr(model, "user_seq")
    meta = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert meta["valid"]["ndcg@10"] >= 0


def test_sequential_training_learns_the_order(tmp_path):
    # every user walks the catalogue in order (item i, then i + 1, ...) from a random start:
    # the history's set says where the walk is, only its order says which way it goes on
    rng = np.random.default_rng(0)
    rows = [(u, (s + t) % 30, t) for u, s in enumerate(rng.integers(0, 30, 60)) for t in range(12)]
    path = tmp_path / "walks.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    common = dict(SMALL, dataset=str(path), protocol="temporal", epochs=10, patience=10,
                  use_user_id=False, lr=1e-2)  # fmt: skip
    seq = run(make_config(TrainStudentConfig, **common, user_encoder="sasrec", seq_layers=1,
                          seq_dropout=0.0, out=str(tmp_path / "seq")))  # fmt: skip
    mean = run(make_config(TrainStudentConfig, **common, out=str(tmp_path / "mean")))
    assert seq["valid"]["ndcg@10"] > 0.8 > 0.7 > mean["valid"]["ndcg@10"]


@pytest.fixture(scope="module")
def seq_labels(tmp_path_factory, tiny_st_dir):
    from pipelines.labels.generate_labels import GenerateLabelsConfig
    from pipelines.labels.generate_labels import run as generate

    out = tmp_path_factory.mktemp("seq_labels") / "labels"
    generate(GenerateLabelsConfig(dataset=SMALL["dataset"], model=str(tiny_st_dir),
                                  n_negatives=10, max_positives=5, eval_users=20,
                                  eval_negatives=10, threads=1, max_seq_length=32,
                                  out=str(out)))  # fmt: skip
    return out


def test_distilled_sasrec_with_sparse_tables_trains(tmp_path, seq_labels):
    config = dict(SMALL, no_teacher=False, labels=str(seq_labels), user_encoder="sasrec",
                  sparse_embeddings="on", soft_users=8, out=str(tmp_path / "d"))  # fmt: skip
    res = run(make_config(TrainStudentConfig, **config, w_listwise_kl=1.0, w_rank=0.5))
    last = res["history"][-1]
    assert res["mode"] == "distilled" and res["sparse_embeddings"] is True
    assert all(np.isfinite(last[k]) for k in ("loss_hard", "loss_listwise_kl", "loss_rank"))
