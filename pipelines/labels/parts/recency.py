"""The recency-weighted collaborative part: the collaborative model as fit on train (the
collaborative part's own fit, ``pipelines.baselines.recency``) reading a user row whose items
weigh ``decay^position-from-the-end`` (decay chosen on validation)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.baselines.collab import fit_collab
from pipelines.baselines.recency import fit_recency
from pipelines.labels.parts.base import InputView, Part, register


@register
class RecencyPart(Part):
    """The collaborative model on the recency-weighted train row, named ``<kind>_recency``;
    items without train interactions through ``content`` (a ``ContentMap``)."""

    key, role, order = "recency", "signal", 120
    full_catalogue = True
    cold_items = "content_map"
    cold_note = "content map: predicted collaborative target, recency-weighted row"

    def __init__(self, model, collab_info: dict, split):
        self.scorer, info = fit_recency(model, split)
        self.fit_info = {"collab": collab_info.get("kind"), **info}
        self.name = f"{model.kind}_recency"
        self.content = None

    @classmethod
    def wanted(cls, c: Any) -> bool:
        return c.sequence_part("recency")

    @classmethod
    def from_config(cls, c: Any, data, split, device: str = "cpu") -> RecencyPart:
        model, info = fit_collab(split, c.collab, c.collab_memory_gb, cache=c.collab_cache)
        return cls(model, info, split)

    @classmethod
    def from_parts(cls, c: Any, data, split, parts: list[Part]) -> RecencyPart:
        """Reuses the collaborative part's fit when it was built before."""
        collab = next((p for p in parts if p.key == "collab"), None)
        if collab is None:
            return cls.from_config(c, data, split)
        return cls(collab.model, collab.fit_info, split)

    def info(self) -> dict:
        """The decay and the validation grid it was chosen from."""
        return self.fit_info

    def use_content(self, content) -> None:
        self.content = content

    def for_input(self, known) -> Part:
        return InputView(self, self.scorer.from_sequences(known))

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self.scorer.score_pairs(users, items)
        if self.content is not None:
            cold = self.content.is_cold(items)
            if cold.any():
                rows = np.searchsorted(self.content.cold, items[cold])  # cold is sorted
                out[cold] = self.scorer.score_cold_pairs(users[cold], self.content.columns[rows])
        return out

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        s = self.scorer(users)
        if self.content is not None:
            s[:, self.content.cold] = self.scorer.score_cold_matrix(users, self.content.columns)
        return s
