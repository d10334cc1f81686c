"""What every teacher part is: a scorer of (user, item) pairs that declares what it can score,
built from the label job's config by its ``from_config``; and the registry of part kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from pipelines.labels.schema import LabelError

Role = Literal["llm", "signal"]
ColdItems = Literal["native", "content_map"]


class Part:
    """One named score in the teacher's mix.

    Class attributes declare the kind: ``key`` (its registry name: a ``--teacher`` value for an
    LLM part), ``role`` (``"llm"``: the one text part ``--teacher`` picks; ``"signal"``: joined
    when ``wanted``), ``order`` (registry order: choices, then build order of the signals),
    ``full_catalogue`` (has ``score_matrix``: the teacher top-k needs every part to),
    ``cold_items`` (``"native"``: scores items without train interactions itself, from their
    text; ``"content_map"``: only through the content map it is handed), ``cold_note`` (how it
    scores those items, for the metadata) and ``default_model`` (LLM parts)."""

    key: ClassVar[str]
    role: ClassVar[Role]
    order: ClassVar[int]
    full_catalogue: ClassVar[bool] = False
    cold_items: ClassVar[ColdItems] = "native"
    cold_note: ClassVar[str] = "the LLM part, as for every item"
    default_model: ClassVar[str | None] = None
    adapt_no_examples: ClassVar[bool] = False  # adapt-teacher: add sampled No examples
    name: str  # its name in the mix ("text", "ease", "als", "popularity")

    @classmethod
    def wanted(cls, c: Any) -> bool:
        """Whether the label job's config ``c`` joins this part (an LLM part: ``c.teacher``)."""
        return c.teacher == cls.key

    @classmethod
    def from_config(cls, c: Any, data, split, device: str = "cpu") -> Part:
        """The part for ``GenerateLabelsConfig`` ``c``, fit on ``split``'s train part."""
        raise NotImplementedError

    @classmethod
    def from_parts(cls, c: Any, data, split, parts: list[Part]) -> Part:
        """As ``from_config``, handed the ``parts`` built before it (a part that reuses another
        one's fit finds it there)."""
        return cls.from_config(c, data, split)

    def for_input(self, known) -> Part:
        """The same fitted part with each user read from ``known`` (an interaction frame in
        split order: ``Split.known_before("test")`` for the teacher's test ranking) instead
        of train; only where ``full_catalogue``."""
        raise NotImplementedError(f"the {self.key} part scores its train input only")

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs ``users`` [P], ``items`` [P] -> scores [P]."""
        raise NotImplementedError

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        """Users [B] -> scores [B, I] (only where ``full_catalogue``)."""
        raise NotImplementedError(f"the {self.key} part scores pairs only")

    def info(self) -> dict:
        """JSON-able record of the part (the LLM part's goes to the metadata)."""
        return {}

    def item_embeddings(self) -> np.ndarray | None:
        """[I, D] item embeddings it scores with, or ``None``."""
        return None

    def use_content(self, content) -> None:
        """Score items without train interactions through ``content`` (a ``ContentMap``);
        a ``"native"`` part needs none."""

    def warm_users(self, batches: list[np.ndarray]) -> None:
        """Replay the user encodings of an uninterrupted in-process run (see
        ``EmbeddingPart.warm_users``); a part whose scores do not depend on batching: no-op."""

    @classmethod
    def adapt(cls, c: Any, data, split, examples: list, out: Path) -> dict:
        """adapt-teacher: fit an adapter on ``examples`` (``AdaptTeacherConfig`` ``c``) to
        ``out``; returns the training metrics."""
        raise LabelError(f"teacher {cls.key!r} has no adaptation")


class InputView(Part):
    """``part`` (fitted) scoring users from another input: ``fn(users [B]) -> [B, I]`` (its
    model read from that input), under the part's name."""

    full_catalogue = True

    def __init__(self, part: Part, fn):
        self.part, self.fn = part, fn
        self.key, self.role, self.order, self.name = part.key, part.role, part.order, part.name

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users), np.asarray(items)
        out = np.empty(len(users), dtype=np.float32)
        for u in np.unique(users):
            idx = np.flatnonzero(users == u)
            out[idx] = self.fn(np.array([u]))[0, items[idx]]
        return out

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        return self.fn(np.asarray(users))


PARTS: dict[str, type[Part]] = {}


def register(cls: type[Part]) -> type[Part]:
    """Class decorator: enter ``cls`` in ``PARTS`` under ``cls.key``, in ``order``."""
    if cls.key in PARTS and PARTS[cls.key] is not cls:
        raise ValueError(f"two teacher parts are named {cls.key!r}: {PARTS[cls.key]} and {cls}")
    PARTS[cls.key] = cls
    ordered = sorted(PARTS.values(), key=lambda k: (k.order, k.key))
    PARTS.clear()
    PARTS.update((k.key, k) for k in ordered)
    return cls
