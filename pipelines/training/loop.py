"""The training loop: epochs of steps over the train interactions, each scored by the
objective, with validation NDCG@10 after each epoch and early stopping."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.core.metrics import evaluate
from pipelines.core.progress import Progress
from pipelines.data import Split
from pipelines.training.batch import ObjectiveInputs, Step
from pipelines.training.objective import Objective
from student.model import TwoTower
from student.scoring import score_fn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """How long and in what batches the loop trains."""

    epochs: int  # at most
    patience: int  # early stopping: epochs without a validation gain
    batch_size: int  # train interactions per step
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
    pairs: tuple[np.ndarray, np.ndarray],
    neg_cdf: np.ndarray,
    rng: np.random.Generator,
    epoch: int,
) -> tuple[dict[str, float], int]:
    """One pass over the train (user, item) ``pairs``: ``({term: summed loss}, steps)``."""
    tr_u, tr_i = pairs
    model.train()
    pad = model.config.n_items
    perm = rng.permutation(len(tr_u))
    sums: dict[str, float] = {}
    steps = (len(tr_u) + c.batch_size - 1) // c.batch_size
    bar = Progress(steps, f"epoch {epoch}", "step")
    for s in range(steps):
        idx = perm[s * c.batch_size : (s + 1) * c.batch_size]
        u, pos = torch.as_tensor(tr_u[idx]), torch.as_tensor(tr_i[idx])
        h = inputs.hist[u].clone()
        h[h == pos[:, None]] = pad  # the target never sits in its own history
        neg = torch.as_tensor(neg_cdf.searchsorted(rng.random(c.n_negatives), side="right"))
        loss, log = objective(Step(model, rng, inputs, u, h, pos, neg))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in log.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.update()
    bar.close()
    return sums, steps


def train_epochs(
    c: Schedule,
    model: TwoTower,
    objective: Objective,
    opt,
    inputs: ObjectiveInputs,
    split: Split,
    v_users: np.ndarray,
    rng: np.random.Generator,
) -> Fit:
    """Epochs until ``c.epochs`` or ``c.patience`` without a validation NDCG@10 gain."""
    valid_truth, valid_seen = split.matrix("valid"), split.seen_for("valid")
    tr_u = split.train["user"].to_numpy().astype(np.int64)
    tr_i = split.train["item"].to_numpy().astype(np.int64)
    # rng.choice(n_items, n, p=p_neg) re-sums p (O(I)) on every step: the same draws from a
    # CDF computed once (numpy's own recipe: cumsum, normalised by its last value)
    neg_cdf = np.cumsum(inputs.p_neg)
    neg_cdf /= neg_cdf[-1]
    best, best_state, bad, history_log = -1.0, None, 0, []
    for epoch in range(1, c.epochs + 1):
        sums, steps = train_epoch(
            c, model, objective, opt, inputs, (tr_u, tr_i), neg_cdf, rng, epoch
        )
        metrics = evaluate(score_fn(model, inputs.hist), valid_truth, valid_seen, users=v_users)
        row = {
            "epoch": epoch,
            **{f"loss_{k}": v / steps for k, v in sums.items()},
            "valid_ndcg@10": metrics["ndcg@10"],
        }
        if split.is_cold:
            row["cold_valid_ndcg@20"] = cold_valid(model, inputs.hist, split)["ndcg@20"]
        history_log.append(row)
        logger.info(
            "epoch %d loss %.4f valid ndcg@10 %.4f%s",
            epoch,
            row["loss_total"],
            metrics["ndcg@10"],
            f" cold-valid ndcg@20 {row['cold_valid_ndcg@20']:.4f}" if split.is_cold else "",
        )
        if metrics["ndcg@10"] > best:
            best, bad = metrics["ndcg@10"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_epoch, best_metrics = epoch, metrics
        else:
            bad += 1
            if bad >= c.patience:
                logger.info("early stop after epoch %d (best %d)", epoch, best_epoch)
                break
    return Fit(history_log, best_epoch, best_state, best_metrics, metrics)


def cold_valid(model: TwoTower, hist: torch.Tensor, split) -> dict:
    """Ranking of the cold-validation items only (model selection for cold items)."""
    from pipelines.baselines.content_map import cold_truth

    truth = cold_truth(split, "cold_valid")
    return evaluate(score_fn(model, hist), truth, None, items=split.cold_valid_items)
