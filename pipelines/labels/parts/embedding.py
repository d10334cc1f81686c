"""The embedding teacher as a part: cosine of the user and the item embeddings over a
temperature (``llm_teacher.embedding``), and its contrastive adaptation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data import InteractionData, Split, histories, render_item_texts
from pipelines.labels.parts.base import Part, register


@register
class EmbeddingPart(Part):
    """Embedding teacher: each unique item text is encoded once; a user is either their
    rendered history encoded once (``user_encoding="text"``) or the unit-norm mean of their
    history items' embeddings (``"item_mean"``: no transformer pass per user; a user with no
    history gets the zero vector, so every item scores 0)."""

    key, role, order, default_model = "embedding", "llm", 0, "minilm"
    full_catalogue = True
    name = "text"

    def __init__(
        self,
        teacher,
        data: InteractionData,
        split: Split,
        history_items: int,
        user_encoding: str = "text",
        item_emb: np.ndarray | None = None,
    ):
        if user_encoding not in ("text", "item_mean"):
            raise ValueError(f"user_encoding={user_encoding!r}; expected 'text' or 'item_mean'")
        self.teacher = teacher
        self.data = data
        self.user_encoding = user_encoding
        if item_emb is None:  # the driver's own, given to a Ray actor: the same array
            item_emb = teacher.encode(render_item_texts(data.items))
        self.item_emb = item_emb
        self.hist = histories(split.train, data.n_users, history_items, data.n_items)
        self.user_text = None
        if user_encoding == "text":
            self.user_text = [user_text(data, row) for row in self.hist]
        self._user_emb: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(
        cls, c: Any, data, split, device: str = "cpu", item_emb: np.ndarray | None = None
    ) -> EmbeddingPart:
        from llm_teacher.embedding import EmbeddingTeacher, EmbeddingTeacherConfig

        t = EmbeddingTeacher(
            EmbeddingTeacherConfig(
                model=c.model or cls.default_model,
                batch_size=c.batch_size,
                temperature=c.temperature,
                max_seq_length=c.max_seq_length,
                adapter=c.adapter,
                device=device,
                precision=c.embedding_precision,
            )
        )
        limit = getattr(t.model.tokenizer, "model_max_length", None) or c.max_seq_length
        t.model.max_seq_length = min(c.max_seq_length, int(limit))
        return cls(t, data, split, c.history_items, c.user_encoding, item_emb)

    def info(self) -> dict:
        return {**self.teacher.info(), "user_encoding": self.user_encoding}

    def item_embeddings(self) -> np.ndarray:
        return self.item_emb

    def user_emb(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users)
        if self.user_encoding == "item_mean":  # each user once (a shard repeats its users)
            once, back = np.unique(users, return_inverse=True)
            return history_mean(self.item_emb, self.hist[once])[back.reshape(users.shape)]
        missing = [u for u in np.unique(users) if u not in self._user_emb]
        if missing:
            emb = self.teacher.encode([self.user_text[u] for u in missing], show_progress=False)
            self._user_emb.update(zip(missing, emb))
        return np.stack([self._user_emb[u] for u in users])

    def for_input(self, known) -> EmbeddingPart:
        """The same encoder and item embeddings with each user's history read from ``known``
        (its most recent ``history_items``); its users are encoded again as they are asked."""
        other = copy.copy(self)
        d = self.data
        other.hist = histories(known, d.n_users, self.hist.shape[1], d.n_items)
        other.user_text = None
        if self.user_encoding == "text":
            other.user_text = [user_text(d, row) for row in other.hist]
        other._user_emb = {}
        return other

    def warm_users(self, batches: list[np.ndarray]) -> None:
        """A text-encoded user's embedding can differ in the last bits with the batch it was
        encoded in (padding to the longest text): replaying the in-process run's ``batches``
        (``[n_u]`` user indices each, in order: the validation users, then each shard's)
        makes this part's scores identical to it. Cached users are not encoded again;
        ``item_mean`` users have no batches."""
        if self.user_encoding == "text":
            for users in batches:
                if len(users):
                    self.user_emb(np.asarray(users))

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.teacher.score(self.user_emb(users), self.item_emb[items])

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        return self.teacher.score_matrix(self.user_emb(users), self.item_emb)

    @classmethod
    def adapt(cls, c: Any, data, split, examples: list, out: Path) -> dict:
        """Contrastive tuning on (user text without the target, target item text) pairs."""
        from llm_teacher.adapt import EmbeddingLoRAConfig, adapt_embedding_model
        from llm_teacher.embedding import load_sentence_transformer

        st = load_sentence_transformer(c.model or cls.default_model)
        st.max_seq_length = c.max_seq_length
        item_text = render_item_texts(data.items)
        pad = np.full(c.history_items, data.n_items)
        pairs = [
            (user_text(data, np.r_[h, pad][: c.history_items]), item_text[j])
            for _, j, h, _ in examples
        ]
        cfg = EmbeddingLoRAConfig(**c.lora(), full_finetune=c.full_finetune)
        return adapt_embedding_model(st, pairs, cfg, out)


def history_mean(item_emb: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """[B, D] unit-norm mean of ``item_emb`` [I, D] over each row of ``hist`` [B, H] (item
    indices, ``I`` = padding); an empty row gives zeros."""
    real = hist < len(item_emb)
    s = (item_emb[np.where(real, hist, 0)] * real[..., None]).sum(1)
    norm = np.linalg.norm(s, axis=1, keepdims=True)
    return (s / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def user_text(data: InteractionData, history_row: np.ndarray) -> str:
    """The user as text: their most recent train titles, most recent first."""
    titles = [data.items.title.iat[j] for j in history_row if j < data.n_items]
    if not titles:
        return "A new user with no history."
    return "Recently watched: " + "; ".join(titles)
