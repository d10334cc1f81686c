"""The training loop: epochs of steps, each scored by the objective, with validation NDCG@10
after each epoch and early stopping.

A mean user tower steps over the train interactions (``batch_size`` per step, the target
removed from its own history). A sequence encoder (``user_encoder`` sasrec or gru) steps over
the train users instead: each user's chronological train sequence, its last
``history_len + 1`` items, gives ``history_len`` (input, next item) positions, and every
position predicts its next item (SASRec's training). A step carries
``max(1, batch_size // history_len)`` users (about ``batch_size`` positions); an epoch is every
train user with at least two train items once. The soft-label terms and validation read the
users' train histories as for the mean tower.

Data-parallel (``shard``, ``pipelines.training.distributed``): every process walks the same
seeded steps and trains on its rows of each (``batch.Shard``; ``objective`` is then the DDP
module); process 0 alone validates and keeps the best weights, and tells the others what it
found, so every process stops after the same epoch."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.core.metrics import evaluate
from pipelines.core.progress import Progress
from pipelines.data import Split, histories
from pipelines.training.batch import ONE_PROCESS, ObjectiveInputs, Shard, Step
from pipelines.training.objective import Objective
from student.model import TwoTower
from student.scoring import score_fn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """How long and in what batches the loop trains."""

    epochs: int  # at most
    patience: int  # early stopping: epochs without a validation gain
    batch_size: int  # train interactions (sequence encoders: positions, ~) per step
    n_negatives: int  # shared sampled negatives per step


@dataclass
class Fit:
    """What the epochs left: per-epoch rows, the kept epoch and the last one's validation."""

    history: list[dict]
    best_epoch: int
    best_state: dict
    best_metrics: dict
    last_metrics: dict


def train_epoch(
    c: Schedule,
    model: TwoTower,
    objective: Objective,
    opt,
    inputs: ObjectiveInputs,
    pairs: tuple[np.ndarray, np.ndarray] | torch.Tensor,
    neg_cdf: np.ndarray,
    rng: np.random.Generator,
    epoch: int,
    shard: Shard = ONE_PROCESS,
) -> tuple[dict[str, float], int]:
    """One pass over the train (user, item) ``pairs`` (or, for a sequence encoder, the users
    of the ``[n_users, history_len + 1]`` sequences): ``({term: summed loss}, steps)``; under
    ``shard`` this process's rows of each step (a step with fewer rows than processes is
    skipped by all), the sums those of the whole steps."""
    model.train()
    if torch.is_tensor(pairs):
        steps, batches = _sequence_batches(c, model, pairs, rng)
    else:
        steps, batches = _interaction_batches(c, model, inputs, pairs, rng)
    sums: dict[str, float] = {}
    bar = Progress(steps, f"epoch {epoch}", "step", quiet=shard.rank > 0)
    for u, h, pos in batches:
        neg = torch.as_tensor(neg_cdf.searchsorted(rng.random(c.n_negatives), side="right"))
        if len(u) < shard.world:
            steps -= 1
            continue
        own = shard.rows(len(u))
        step = Step(model, rng, inputs, u[own], h[own], pos[own], neg, shard=shard,
                    batch_pos=None if shard.world == 1 else pos, own=own)  # fmt: skip
        loss, log = objective(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in log.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.update()
    bar.close()
    return mean_over_processes(sums, shard), max(steps, 1)


def mean_over_processes(sums: dict[str, float], shard: Shard) -> dict[str, float]:
    """The processes' loss sums, averaged: each process's terms are weighted by its share."""
    if shard.world == 1 or not sums:
        return sums
    import torch.distributed as dist

    values = torch.tensor(list(sums.values()), dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(sums, (values / shard.world).tolist()))


def _interaction_batches(c: Schedule, model: TwoTower, inputs: ObjectiveInputs, pairs, rng):
    """``(steps, batches)``: ``batch_size`` interactions a step, each user's train history
    with the target removed; ``pos`` [B]."""
    tr_u, tr_i = pairs
    pad = model.config.n_items
    perm = rng.permutation(len(tr_u))
    steps = (len(tr_u) + c.batch_size - 1) // c.batch_size

    def batches():
        for s in range(steps):
            idx = perm[s * c.batch_size : (s + 1) * c.batch_size]
            u, pos = torch.as_tensor(tr_u[idx]), torch.as_tensor(tr_i[idx])
            h = inputs.hist[u].clone()
            h[h == pos[:, None]] = pad  # the target never sits in its own history
            yield u, h, pos

    return steps, batches()


def _sequence_batches(c: Schedule, model: TwoTower, seqs: torch.Tensor, rng):
    """``(steps, batches)`` over the users of ``seqs`` [n_users, history_len + 1] (each user's
    last train items, most recent first): a step's history is a row without its most recent
    item, ``pos`` [B, history_len] the item after each history position (padding where none)."""
    pad = model.config.n_items
    users = np.flatnonzero((seqs[:, 1] != pad).numpy())  # at least one (input, next) pair
    per_step = max(1, c.batch_size // model.config.history_len)
    perm = rng.permutation(users)
    steps = (len(perm) + per_step - 1) // per_step

    def batches():
        for s in range(steps):
            u = torch.as_tensor(perm[s * per_step : (s + 1) * per_step])
            h = seqs[u, 1:]
            yield u, h, torch.where(h != pad, seqs[u, :-1], pad)

    return steps, batches()


def train_epochs(
    c: Schedule,
    model: TwoTower,
    objective: Objective,
    opt,
    inputs: ObjectiveInputs,
    split: Split,
    v_users: np.ndarray,
    rng: np.random.Generator,
    shard: Shard = ONE_PROCESS,
) -> Fit:
    """Epochs until ``c.epochs`` or ``c.patience`` without a validation NDCG@10 gain (under
    ``shard``, process 0 validates and keeps the weights; ``best_state`` is None elsewhere)."""
    tr_u = split.train["user"].to_numpy().astype(np.int64)
    tr_i = split.train["item"].to_numpy().astype(np.int64)
    # rng.choice(n_items, n, p=p_neg) re-sums p (O(I)) on every step: the same draws from a
    # CDF computed once (numpy's own recipe: cumsum, normalised by its last value)
    neg_cdf = np.cumsum(inputs.p_neg)
    neg_cdf /= neg_cdf[-1]
    best, best_state, bad, history_log = -1.0, None, 0, []
    cfg = model.config
    data: tuple | torch.Tensor = (tr_u, tr_i)
    if cfg.user_encoder != "mean":  # every user's last history_len + 1 train items
        seqs = histories(split.train, cfg.n_users, cfg.history_len + 1, cfg.n_items)
        data = torch.as_tensor(seqs)
    for epoch in range(1, c.epochs + 1):
        sums, steps = train_epoch(c, model, objective, opt, inputs, data, neg_cdf, rng, epoch,
                                  shard)  # fmt: skip
        row, metrics = None, None
        if shard.rank == 0:
            row, metrics = validate(model, inputs, split, v_users, epoch, sums, steps)
        row, metrics = from_first((row, metrics), shard)
        history_log.append(row)
        if metrics["ndcg@10"] > best:
            best, bad = metrics["ndcg@10"], 0
            if shard.rank == 0:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_epoch, best_metrics = epoch, metrics
        else:
            bad += 1
            if bad >= c.patience:
                logger.info("early stop after epoch %d (best %d)", epoch, best_epoch)
                break
    return Fit(history_log, best_epoch, best_state, best_metrics, metrics)


def validate(model: TwoTower, inputs: ObjectiveInputs, split: Split, v_users: np.ndarray,
             epoch: int, sums: dict[str, float], steps: int) -> tuple[dict, dict]:  # fmt: skip
    """The epoch's row (mean losses, validation NDCG@10, cold-valid NDCG@20) and metrics."""
    valid_truth, valid_seen = split.matrix("valid"), split.seen_for("valid")
    metrics = evaluate(score_fn(model, inputs.hist), valid_truth, valid_seen, users=v_users,
                       items=inputs.items)  # fmt: skip
    row = {
        "epoch": epoch,
        **{f"loss_{k}": v / steps for k, v in sums.items()},
        "valid_ndcg@10": metrics["ndcg@10"],
    }
    if split.is_cold:
        row["cold_valid_ndcg@20"] = cold_valid(model, inputs.hist, split)["ndcg@20"]
    logger.info(
        "epoch %d loss %.4f valid ndcg@10 %.4f%s",
        epoch,
        row["loss_total"],
        metrics["ndcg@10"],
        f" cold-valid ndcg@20 {row['cold_valid_ndcg@20']:.4f}" if split.is_cold else "",
    )
    return row, metrics


def from_first(obj, shard: Shard):
    """``obj`` as process 0 has it (data-parallel), else ``obj``."""
    if shard.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cold_valid(model: TwoTower, hist: torch.Tensor, split) -> dict:
    """Ranking of the cold-validation items only (model selection for cold items)."""
    from pipelines.baselines.content_map import cold_truth

    truth = cold_truth(split, "cold_valid")
    return evaluate(score_fn(model, hist), truth, None, items=split.cold_valid_items)
