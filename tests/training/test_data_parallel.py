"""Data-parallel training: the workers' shares of a step add up to the one-process step, and
`train-student --num-workers 2` on Ray Train gives a student like the one-process job's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.data import histories, load_dataset, training_split
from pipelines.training.batch import ObjectiveInputs, Shard, Step
from pipelines.training.objective import Objective
from pipelines.training.soft_lists import SoftLists
from pipelines.training.terms import TermSettings
from pipelines.training.train_student import TrainStudentConfig, run
from student.losses import DistillLossWeights
from student.model import TwoTower, TwoTowerConfig

N_USERS, N_ITEMS, L = 12, 30, 5


def tiny_model(encoder: str) -> TwoTower:
    torch.manual_seed(0)
    return TwoTower(
        TwoTowerConfig(
            n_users=N_USERS, n_items=N_ITEMS, history_len=L, user_encoder=encoder,
            dropout=0.0, seq_dropout=0.0, seq_heads=1, out_dim=8, id_dim=8, user_hidden=(16,), item_hidden=(16,),
        )
    )  # fmt: skip


def tiny_lists(rng) -> SoftLists:
    items = np.stack([rng.choice(N_ITEMS, 6, replace=False) for _ in range(N_USERS)])
    mask = np.ones_like(items, dtype=bool)
    mask[::3, 4:] = False  # some padded slots
    scores = rng.normal(size=items.shape).astype(np.float32)
    return SoftLists(items, scores, 1 / (1 + np.exp(-scores)), np.zeros_like(mask), mask,
                     np.arange(N_USERS), None)  # fmt: skip


def step_gradient(model, objective, inputs, batch, shard: Shard | None) -> list[torch.Tensor]:
    """The gradients of one step: the whole batch (shard None) or one worker's share."""
    u, h, pos, neg = batch
    rng = np.random.default_rng(7)  # every worker draws the same soft users
    model.zero_grad(set_to_none=True)
    if shard is None:
        step = Step(model, rng, inputs, u, h, pos, neg)
    else:
        own = shard.rows(len(u))
        step = Step(model, rng, inputs, u[own], h[own], pos[own], neg, shard=shard,
                    batch_pos=pos, own=own)  # fmt: skip
    loss, _ = objective(step)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]  # fmt: skip


@pytest.mark.parametrize("encoder", ["mean", "sasrec"])
def test_two_workers_shares_average_to_the_one_process_step(encoder: str) -> None:
    # DDP averages the workers' gradients: that average must be the one-process step's, the
    # in-batch candidates (every positive of the global step) and the soft terms included
    rng = np.random.default_rng(0)
    model = tiny_model(encoder)
    lists = tiny_lists(rng)
    hist = torch.as_tensor(rng.integers(0, N_ITEMS + 1, size=(N_USERS, L)))
    p = np.full(N_ITEMS, 1 / N_ITEMS)
    inputs = ObjectiveInputs(hist, p, p, lists)
    weights = DistillLossWeights(hard=1.0, listwise_kl=1.0, soft_bce=0.5, margin_mse=0.5, rank=0.5)
    objective = Objective(weights, TermSettings(n_negatives=5, soft_users=7, out_dim=8))
    u = torch.arange(N_USERS - 1)  # 11 rows: the two shares differ in size (6 and 5)
    if encoder == "mean":
        h, pos = hist[u], torch.as_tensor(rng.integers(0, N_ITEMS, len(u)))
    else:  # every history position's next item, padded (N_ITEMS) where none
        seqs = torch.as_tensor(rng.integers(0, N_ITEMS, size=(len(u), L + 1)))
        seqs[::4, 3:] = N_ITEMS
        h, pos = seqs[:, 1:], torch.where(seqs[:, 1:] != N_ITEMS, seqs[:, :-1], N_ITEMS)
    batch = (u, h, pos, torch.as_tensor(rng.integers(0, N_ITEMS, 5)))
    whole = step_gradient(model, objective, inputs, batch, None)
    shares = [step_gradient(model, objective, inputs, batch, Shard(r, 2)) for r in (0, 1)]
    for g, g0, g1 in zip(whole, *shares):
        torch.testing.assert_close((g0 + g1) / 2, g, atol=1e-6, rtol=1e-5)
    # and the shares are real parts: neither alone is the whole step
    assert not all(torch.allclose(g0, g, atol=1e-6) for g, g0 in zip(whole, shares[0]))


def test_shard_rows_and_share() -> None:
    assert Shard(1, 3).rows(7).tolist() == [1, 4]
    assert Shard(1, 3).share(2, 7) == pytest.approx(6 / 7)
    assert Shard().share(5, 9) == 1.0


def test_num_workers_config_is_checked() -> None:
    with pytest.raises(ValueError, match="num_workers=0; expected >= 1"):
        TrainStudentConfig(no_teacher=True, num_workers=0)
    with pytest.raises(ValueError, match="num_workers=4 > batch_size=2"):
        TrainStudentConfig(no_teacher=True, num_workers=4, batch_size=2)
    with pytest.raises(ValueError, match="apply to --num-workers > 1 only"):
        TrainStudentConfig(no_teacher=True, ray_storage="/tmp/x")


DATA = "synthetic:users=200,items=120,seed=3"


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.train.torch")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def student_config(out, **kw) -> TrainStudentConfig:
    kw.setdefault("no_teacher", True)
    return TrainStudentConfig(
        dataset=DATA, epochs=3, batch_size=128, n_negatives=64, threads=1,
        out=str(out), model=TwoTowerConfig(n_users=1, n_items=1, dropout=0.0), **kw,
    )  # fmt: skip


def test_two_ray_train_workers_train_a_student_like_one_process(tmp_path, local_ray) -> None:
    one = run(student_config(tmp_path / "one"))
    two = run(student_config(tmp_path / "two", num_workers=2))
    assert two["data_parallel"]["workers"] == 2 and two["data_parallel"]["backend"] == "gloo"
    assert (
        json.loads((tmp_path / "two" / "metrics.json").read_text())["data_parallel"]
        == (two["data_parallel"])
    )
    assert len(two["history"]) == len(one["history"]) == 3
    # the same steps, gradients averaged over two workers: validation within 2%
    assert two["valid"]["ndcg@10"] == pytest.approx(one["valid"]["ndcg@10"], rel=0.02)
    # it loads like any student and scores like the metrics say
    model = TwoTower.from_pretrained(tmp_path / "two" / "model")
    data = load_dataset(DATA)
    split = training_split(data, "random", 0, "inductive")
    hist = torch.as_tensor(histories(split.train, data.n_users, 50, data.n_items))
    with torch.no_grad():
        assert torch.isfinite(model.score(model.encode_users(torch.arange(3), hist[:3]),
                                          model.encode_items(torch.arange(5)))).all()  # fmt: skip
    assert not any(p.name.startswith(".ray-train-") for p in tmp_path.iterdir())


def test_a_worker_error_is_raised_as_the_workers_own(tmp_path, local_ray) -> None:
    # bad input found by the workers (here: labels that do not exist) is the same one-line
    # error as in one process, not a Ray traceback
    labels = tmp_path / "labels"
    labels.mkdir()
    bad = student_config(tmp_path / "s", num_workers=2, no_teacher=False, labels=str(labels))
    with pytest.raises(ValueError, match=f"{labels}.*generate-labels") as e:
        run(bad)
    assert "Ray" not in str(e.value) and not (tmp_path / "s").exists()
