"""The transition part: item -> next item from the train sequences (``pipelines.baselines.
transition``), a user scored from their last known items."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.baselines.transition import Transition, fit_transition
from pipelines.labels.parts.base import InputView, Part, register


@register
class TransitionPart(Part):
    """``sum_k decay^k P[h_k]`` over the user's last ``window`` train items (``P``: next-item
    frequencies of consecutive train interactions; window and decay chosen on validation)."""

    key, role, order = "transition", "signal", 130
    full_catalogue = True
    cold_note = "0: an item without train interactions follows none"
    name = "transition"

    def __init__(self, model: Transition, fit_info: dict):
        self.model, self.fit_info = model, fit_info

    @classmethod
    def wanted(cls, c: Any) -> bool:
        return c.sequence_part("transition")

    @classmethod
    def from_config(cls, c: Any, data, split, device: str = "cpu") -> TransitionPart:
        return cls(*fit_transition(split))

    def info(self) -> dict:
        """The window and decay and the validation grid they were chosen from."""
        return self.fit_info

    def for_input(self, known) -> Part:
        return InputView(self, self.model.from_sequences(known))

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.model.score_pairs(users, items)

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        return self.model(users)
