"""Fit a student's content head (``student.content_head``) and choose its ridge lambda on
cold-validation: the cold-validation items ranked alone from train histories, as the
training loop's cold-valid check does (``cold_items`` protocol; elsewhere ``DEFAULT_LAMBDA``)."""

from __future__ import annotations

import logging

import torch

from student.content_head import fit_content_head
from student.model import TwoTower

logger = logging.getLogger(__name__)

LAMBDAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
DEFAULT_LAMBDA = 1.0


def fit_head(model: TwoTower, hist: torch.Tensor, split) -> dict:
    """Fit the head for each lambda, keep the best cold-valid NDCG@20; returns the record
    (``lambda``, ``items``, ``cold_valid`` per lambda)."""
    from pipelines.training.loop import cold_valid

    if not split.is_cold:
        return fit_content_head(model, DEFAULT_LAMBDA) | {"chosen_on": "default"}
    grid = {}
    for lam in LAMBDAS:
        fit_content_head(model, lam)
        grid[lam] = cold_valid(model, hist, split)["ndcg@20"]
        logger.info("content head lambda %g: cold-valid ndcg@20 %.4f", lam, grid[lam])
    best = max(grid, key=grid.get)
    rec = fit_content_head(model, best)
    return rec | {
        "chosen_on": "cold_valid ndcg@20",
        "cold_valid": {str(k): v for k, v in grid.items()},
    }
