"""The collaborative part: EASE^R or implicit ALS fit on the train split
(``pipelines.baselines.collab.fit_collab``), named after the model it fit."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.baselines.collab import DEFAULT_MEMORY_GB, fit_collab
from pipelines.data import Split, to_csr
from pipelines.labels.parts.base import InputView, Part, register

COLLAB_TARGET = {"ease": "EASE^R column", "als": "ALS item factor"}  # what the content map predicts


@register
class CollabPart(Part):
    """The collaborative model (EASE^R or ALS, ``fit_collab``), named after its kind; items
    without train interactions through ``content`` (a ``ContentMap``)."""

    key, role, order = "collab", "signal", 100
    full_catalogue = True
    cold_items = "content_map"

    def __init__(
        self,
        split: Split,
        kind: str = "auto",
        memory_gb: float = DEFAULT_MEMORY_GB,
        cache: str | None = None,
    ):
        self.model, self.fit_info = fit_collab(split, kind, memory_gb, cache=cache)
        self.n_users, self.n_items = split.n_users, split.n_items
        self.name = self.fit_info["kind"]
        self.content = None

    @classmethod
    def wanted(cls, c: Any) -> bool:
        return c.collab != "none"

    @classmethod
    def from_config(cls, c: Any, data, split, device: str = "cpu") -> CollabPart:
        return cls(split, c.collab, c.collab_memory_gb, cache=c.collab_cache)

    @property
    def cold_note(self) -> str:
        return f"content map: predicted {COLLAB_TARGET[self.name]}"

    def info(self) -> dict:
        """What ``fit_collab`` chose and why (kind, lambda or regularization, grid)."""
        return self.fit_info

    def use_content(self, content) -> None:
        self.content = content

    def for_input(self, known) -> Part:
        """The fit read from ``known``'s rows (``from_histories``: EASE^R ``x_u B``, ALS folded
        in); warm items only (no content map)."""
        rows = to_csr(known, self.n_users, self.n_items)
        return InputView(self, self.model.from_histories(rows))

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs ``users`` [P], ``items`` [P] -> [P] (ALS: one dot product per pair)."""
        out = self.model.score_pairs(users, items)
        if self.content is not None:
            cold = self.content.is_cold(items)
            out[cold] = self.content.score_cold(users[cold], items[cold])
        return out

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        """[B] -> [B, I]."""
        s = self.model(users)
        if self.content is not None:
            s[:, self.content.cold] = self.content.score_cold_matrix(users)
        return s
