"""The popularity part: log(1 + train count)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.data import Split
from pipelines.labels.parts.base import Part, register


@register
class PopularityPart(Part):
    """log(1 + train count); items without train interactions get ``content``'s prediction."""

    key, role, order = "popularity", "signal", 110
    full_catalogue = True
    cold_items = "content_map"
    cold_note = "content map: predicted log count"
    name = "popularity"

    def __init__(self, split: Split):
        self.logpop = np.log1p(np.asarray(split.matrix("train").sum(0)).ravel()).astype(np.float32)

    @classmethod
    def wanted(cls, c: Any) -> bool:
        return bool(c.popularity)

    @classmethod
    def from_config(cls, c: Any, data, split, device: str = "cpu") -> PopularityPart:
        return cls(split)

    def use_content(self, content) -> None:
        self.logpop = self.logpop.copy()
        self.logpop[content.cold] = content.log_count

    def for_input(self, known) -> Part:
        """The same counts whatever the user's input."""
        return self

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.logpop[items]

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.logpop, (len(users), len(self.logpop)))
