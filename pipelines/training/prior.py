"""The popularity prior of a student with an item bias, chosen on validation users read from a
short history (as a new user is served).

After training, ``fit_prior`` adds ``w * log(1 + train count)`` to ``TwoTower.item_bias``, with
``w`` the value of ``PRIOR_GRID`` (0 included: the learned bias alone) that gives the best
validation NDCG@20 when each validation user is scored as a new user from the first
``history`` items of their train interactions (by time; ``encode_users(None, ...)``, their
train items excluded). Known users then weigh the bias by ``known_bias_weight``, chosen on
their own validation NDCG@10 (``KNOWN_GRID``), so they need not pay for a prior meant for
short histories. Both are in the model (the bias and a buffer), so they travel with it
through compression, save/load, the index (the query's last coordinate) and the server. The learned bias alone stays small (on
ML-100K cold_items it spanned -0.17..0.43 at the kept epoch, early stopping on warm users
comes first), which is why the prior is fitted rather than left to the loss.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pipelines.core.metrics import evaluate
from pipelines.data import Split, histories
from student.model import TwoTower
from student.scoring import score_fn

logger = logging.getLogger(__name__)

PRIOR_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # w, in score units (scale x cosine)
KNOWN_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # the bias's weight for known users


def short_histories(split: Split, length: int, model: TwoTower) -> torch.Tensor:
    """[n_users, history_len] each user's first ``length`` train items by time (most recent
    first, padded with n_items): the input a validation user gets as a 5-item new user."""
    c = model.config
    first = split.known_before("valid").groupby("user", sort=False).head(length)
    return torch.as_tensor(histories(first, c.n_users, c.history_len, c.n_items))


def fit_prior(
    model: TwoTower,
    split: Split,
    length: int,
    users: np.ndarray | None = None,
    grid: tuple[float, ...] = PRIOR_GRID,
) -> dict:
    """Choose ``w`` on ``users`` (validation users; None = all) read from ``length`` train
    items, add ``w * log1p(train count)`` to ``model.item_bias`` in place; the record."""
    if not model.config.item_bias:
        raise ValueError("fit_prior: the model has no item bias (TwoTowerConfig.item_bias)")
    if model.config.history_len == 0:
        raise ValueError("fit_prior: the model reads no history (history_len=0)")
    counts = np.bincount(split.train["item"].to_numpy(), minlength=model.config.n_items)
    prior = torch.as_tensor(np.log1p(counts), dtype=torch.float32)
    truth, seen = split.matrix("valid"), split.seen_for("valid")
    new_fn = score_fn(model, short_histories(split, length, model), new_users=True)
    log_prior = prior.numpy()
    by_w = {}
    for w in grid:
        m = evaluate(lambda u, w=w: new_fn(u) + w * log_prior, truth, seen, users=users)
        by_w[float(w)] = m["ndcg@20"]
    best = max(by_w, key=lambda w: (by_w[w], -w))  # ties: the smaller weight
    with torch.no_grad():
        model.item_bias.add_(best * prior)
    logger.info("popularity prior: w %g (validation ndcg@20 from %d items: %s)", best, length,
                ", ".join(f"{w:g}: {v:.4f}" for w, v in by_w.items()))  # fmt: skip
    known, by_a = _known_weight(model, split, users)
    return {
        "weight": best,
        "history": length,
        "valid_ndcg@20_by_weight": {f"{w:g}": v for w, v in by_w.items()},
        "known_weight": known,
        "valid_ndcg@10_by_known_weight": {f"{a:g}": v for a, v in by_a.items()},
    }


def _known_weight(model: TwoTower, split: Split, users: np.ndarray | None) -> tuple[float, dict]:
    """The bias's weight for known users (their whole history, their id), chosen on their
    validation NDCG@10 from ``KNOWN_GRID`` and set in ``model.known_bias_weight``: the prior
    is for histories that say little, a known user's need not pay for it."""
    c = model.config
    hist = torch.as_tensor(histories(split.known_before("valid"), c.n_users, c.history_len,
                                     c.n_items))  # fmt: skip
    truth, seen = split.matrix("valid"), split.seen_for("valid")
    by_a = {}
    for a in KNOWN_GRID:
        model.known_bias_weight.fill_(a)
        by_a[float(a)] = evaluate(score_fn(model, hist), truth, seen, users=users)["ndcg@10"]
    best = max(by_a, key=lambda a: (by_a[a], a))  # ties: the larger weight (training's 1)
    model.known_bias_weight.fill_(best)
    logger.info("known users' bias weight %g (validation ndcg@10 %.4f)", best, by_a[best])
    return best, by_a
