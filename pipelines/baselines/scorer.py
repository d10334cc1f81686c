"""One interface for every baseline scorer (after implicit's ``RecommenderBase``).

A scorer is built by its fit (``fit_ease``, ``fit_als``, ``fit_collab``, ``fit_content_map``:
``split -> (model, info)``) and scored with ``model(users [B]) -> [B, I]`` or
``model.score_pairs(users [P], items [P]) -> [P]``. What it can score is declared as class
attributes, so a caller reads them instead of probing with ``hasattr``:

- ``scores_warm``: items with train interactions;
- ``scores_cold``: items without any, from their content;
- ``scores_histories``: a user given by a history row rather than a train user
  (:meth:`Scorer.from_histories`);
- ``scores_sequences``: a user read, in order, from an interaction frame (``from_sequences``:
  the transition and recency-weighted scorers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import scipy.sparse as sp


class Scorer:
    """Base of the baselines: ``kind`` names the model; the three flags say what it scores."""

    kind: ClassVar[str]
    scores_warm: ClassVar[bool] = True
    scores_cold: ClassVar[bool] = False
    scores_histories: ClassVar[bool] = False
    scores_sequences: ClassVar[bool] = False

    def __call__(self, users: np.ndarray) -> np.ndarray:
        """[B] -> [B, I] float32."""
        raise NotImplementedError

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs ``users`` [P], ``items`` [P] -> [P]: one dense row per distinct user."""
        users, items = np.asarray(users), np.asarray(items)
        out = np.empty(len(users), dtype=np.float32)
        for u in np.unique(users):
            idx = np.flatnonzero(users == u)
            out[idx] = self(np.array([u]))[0, items[idx]]
        return out

    def from_histories(self, rows: sp.csr_matrix) -> Callable[[np.ndarray], np.ndarray]:
        """``users [B] -> [B, I]`` with user ``u`` read from ``rows[u]`` ([U, I], e.g. new
        users' histories) instead of its train row; only where ``scores_histories``."""
        raise ValueError(f"{type(self).__name__} cannot score a user from a history")

    def user_vectors(self, rows: sp.csr_matrix) -> np.ndarray | sp.csr_matrix:
        """History rows [U, I] -> the users as :meth:`content_targets` reads them (EASE^R: the
        rows themselves; ALS: folded in, [U, D]); only where ``scores_histories``."""
        raise ValueError(f"{type(self).__name__} cannot read a user from a history")

    def content_targets(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(targets [I, D], users [U, D] or None)`` a content map is fit onto."""
        raise ValueError(
            f"fit_content_map: model {type(self).__name__} is neither EASE^R (or its B) nor ALS"
        )
