"""The causal-LM teacher as a part: log P(yes) - log P(no) for a prompt built from the user's
history and the candidate (``llm_teacher.causal_lm``), and its yes/no adaptation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data import InteractionData, Split, histories
from pipelines.labels.parts.base import Part, register


@register
class CausalPart(Part):
    """Causal-LM teacher: one prompt prefix per user, shared over that user's candidates."""

    key, role, order, default_model = "causal_lm", "llm", 1, "smollm2"
    adapt_no_examples = True
    name = "text"

    def __init__(self, scorer, data: InteractionData, split: Split, history_items: int):
        self.scorer = scorer
        self.data = data
        self.hist = histories(split.train, data.n_users, history_items, data.n_items)
        ratings = split.train.set_index(["user", "item"])["rating"]
        self.ratings = ratings.to_dict()
        self._prefix: dict[int, list[int]] = {}

    @classmethod
    def from_config(cls, c: Any, data, split, device: str = "cpu") -> CausalPart:
        from llm_teacher.causal_lm import CausalLMScorer, CausalLMScorerConfig
        from llm_teacher.loading import load_causal_lm

        model, tok = load_causal_lm(c.model or cls.default_model, adapter=c.adapter)
        scorer = CausalLMScorer(
            model,
            tok,
            CausalLMScorerConfig(
                batch_size=c.batch_size,
                max_history_tokens=c.max_history_tokens,
                template=c.template,
                device=device,
            ),
        )
        return cls(scorer, data, split, c.history_items)

    def info(self) -> dict:
        return self.scorer.info()

    def item_dict(self, j: int, rating=None) -> dict:
        row = self.data.items.iloc[j]
        year = None if np.isnan(row["year"]) else int(row["year"])
        return {
            "title": row["title"],
            "year": year,
            "genres": list(row["genres"]),
            "rating": rating,
        }

    def user_features(self, u: int) -> dict | None:
        users = self.data.users
        feats = {c: users[c].iat[u] for c in ("age", "gender", "occupation") if c in users}
        return {
            k: (int(v) if isinstance(v, float) and not np.isnan(v) else v) for k, v in feats.items()
        } or None

    def prefix(self, u: int) -> list[int]:
        if u not in self._prefix:
            history = [
                self.item_dict(j, self.ratings.get((u, j)))
                for j in self.hist[u]
                if j < self.data.n_items
            ]
            text = self.scorer.render_prefix(history, self.user_features(u))
            self._prefix[u] = self.scorer.prefix_ids(text)
        return self._prefix[u]

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.empty(len(users), dtype=np.float32)
        for u in np.unique(users):
            idx = np.flatnonzero(users == u)
            cands = [self.item_dict(j) for j in items[idx]]
            out[idx] = self.scorer.score(
                self.prefix(int(u)), cands, user=self.data.users.user_id.iat[u]
            )
        return out

    @classmethod
    def adapt(cls, c: Any, data, split, examples: list, out: Path) -> dict:
        """TALLRec-style yes/no LoRA on (prompt prefix, candidate, label) rows."""
        from llm_teacher.adapt import CausalLoRAConfig, adapt_causal_lm
        from llm_teacher.causal_lm import CausalLMScorer, CausalLMScorerConfig
        from llm_teacher.loading import load_causal_lm

        model, tok = load_causal_lm(c.model or cls.default_model)
        scorer = CausalLMScorer(
            model, tok, CausalLMScorerConfig(max_history_tokens=c.max_history_tokens)
        )
        part = cls(scorer, data, split, c.history_items)
        rows = []
        for u, j, hist, label in examples:
            history = [part.item_dict(i, part.ratings.get((u, i))) for i in hist]
            rows.append(
                (scorer.render_prefix(history, part.user_features(u)), part.item_dict(j), label)
            )
        cfg = CausalLoRAConfig(**c.lora())
        return adapt_causal_lm(scorer.model, tok, rows, cfg, out)
