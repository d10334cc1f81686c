"""Full-catalogue scoring with a student: the one scorer that training's validation, the
compression steps and the benchmark share."""

from __future__ import annotations

import numpy as np
import torch

from student.model import TwoTower


def score_fn(model: TwoTower, hist: torch.Tensor, new_users: bool = False):
    """Full-catalogue scorer (e.g. for ``pipelines.core.metrics.evaluate``): users [B] -> [B, I].

    ``new_users``: score every user as a new one, from ``hist[u]`` alone (no id, no
    features: ``encode_users(None, ...)``), as a server does for a history given at query time.
    """
    model.eval()
    with torch.no_grad():
        items = model.encode_items(torch.arange(model.config.n_items))

    def fn(users: np.ndarray) -> np.ndarray:
        u = torch.as_tensor(users, dtype=torch.long)
        with torch.no_grad():
            user = model.encode_users(None if new_users else u, hist[u])
            return model.score(user, items, new_users=new_users).numpy()

    return fn
