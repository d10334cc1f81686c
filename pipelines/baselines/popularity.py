"""Popularity: every report's floor."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from pipelines.baselines.scorer import Scorer


class Popularity(Scorer):
    """Scores every item by its train interaction count (the same for every user, so any
    history is scored; items without train interactions all score 0)."""

    kind = "popularity"
    scores_histories = True

    def __init__(self, train: sp.csr_matrix):
        self.counts = np.asarray(train.sum(0)).ravel().astype(np.float32)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts)))

    def from_histories(self, rows: sp.csr_matrix) -> Callable[[np.ndarray], np.ndarray]:
        return self
