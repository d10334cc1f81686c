"""Seeded synthetic interactions with planted structure, for tests and scale runs.

Users and items get latent factors; each item belongs to the genre of its strongest factor
and its text carries that genre's words, so item text holds real signal. Item popularity
follows a Zipf-like skew. Each user's items are drawn without replacement from
softmax(u . v + popularity bias).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from pipelines.data.dataset import InteractionData, build_data

GENRE_WORDS = [
    ("Action", "explosions chase hero fight"),
    ("Comedy", "jokes funny laughs awkward"),
    ("Drama", "family tears struggle life"),
    ("Horror", "ghost blood night fear"),
    ("Romance", "love wedding kiss heart"),
    ("Sci-Fi", "space robot future alien"),
    ("Documentary", "history facts nature real"),
    ("Animation", "cartoon colorful kids magic"),
]


@dataclass
class SyntheticConfig:
    users: int = field(default=300, metadata={"help": "number of users"})
    items: int = field(default=500, metadata={"help": "number of items"})
    factors: int = field(default=8, metadata={"help": "latent dimension (<= 8 genres)"})
    per_user: int = field(default=30, metadata={"help": "median interactions per user"})
    popularity_skew: float = field(default=1.0, metadata={"help": "Zipf exponent of item bias"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def __post_init__(self):
        for name in ("users", "items", "factors", "per_user"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticConfig.{name}={getattr(self, name)!r}; expected >= 1")
        if self.factors > len(GENRE_WORDS):
            raise ValueError(
                f"SyntheticConfig.factors={self.factors}; expected <= {len(GENRE_WORDS)}"
            )
        if self.per_user >= self.items:
            raise ValueError(
                f"SyntheticConfig.per_user={self.per_user} must be below items={self.items}"
            )


def make_synthetic(config: SyntheticConfig | None = None) -> InteractionData:
    c = config or SyntheticConfig()
    rng = np.random.default_rng(c.seed)
    item_f = rng.normal(size=(c.items, c.factors)) / np.sqrt(c.factors)
    item_f[np.arange(c.items), rng.integers(0, c.factors, c.items)] += 1.0
    genre = item_f.argmax(1)
    user_f = rng.normal(size=(c.users, c.factors)) / np.sqrt(c.factors)
    user_f[np.arange(c.users), rng.integers(0, c.factors, c.users)] += 1.0
    ranks = rng.permutation(c.items) + 1
    bias = -c.popularity_skew * np.log(ranks)
    bias -= bias.mean()

    rows = []
    t0 = 1_000_000_000
    counts = np.clip(rng.lognormal(np.log(c.per_user), 0.5, c.users).astype(int), 5, c.items - 1)
    for u in range(c.users):
        logits = 3.0 * item_f @ user_f[u] + bias
        g = rng.gumbel(size=c.items)  # Gumbel top-k == sampling without replacement
        chosen = np.argpartition(-(logits + g), counts[u])[: counts[u]]
        affinity = (item_f[chosen] @ user_f[u]) * 3.0
        rating = np.clip(np.round(3 + affinity + rng.normal(0, 0.5, len(chosen))), 1, 5)
        ts = t0 + np.sort(rng.integers(0, 10_000_000, len(chosen)))
        order = rng.permutation(len(chosen))
        for k, j in enumerate(chosen[order]):
            rows.append((str(u + 1), str(j + 1), float(rating[order][k]), int(ts[k])))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [str(j + 1) for j in range(c.items)],
            "title": [f"{GENRE_WORDS[g][0]} story {j + 1}" for j, g in enumerate(genre)],
            "year": rng.integers(1950, 2020, c.items).astype(float),
            "genres": [[GENRE_WORDS[g][0]] for g in genre],
            "text": [GENRE_WORDS[g][1] for g in genre],
        }
    )
    users = pd.DataFrame(
        {
            "user_id": [str(u + 1) for u in range(c.users)],
            "age": rng.integers(15, 70, c.users).astype(float),
        }
    )
    data = build_data("synthetic", ratings, items, users, source=f"synthetic:{asdict(c)}")
    return data
