"""Seeded synthetic interactions with planted structure, for tests and scale runs.

Users and items get latent factors (``factors`` <= 8 dimensions, one per genre); each item
belongs to the genre of its strongest factor and its text carries that genre's words, so item
text holds real signal; each user has a dominant factor too. Item popularity follows a
Zipf-like skew (``bias_j = -popularity_skew * log(rank_j)``). Each user's history length is
lognormal around ``per_user`` (at least 5, below ``items``). Two samplers draw the histories
(``SyntheticConfig.sampler``; "auto" picks by size, :func:`resolve_sampler`):

- ``exact``: per user, items without replacement from ``softmax(3 u.v + bias)`` over the
  whole catalogue (Gumbel top-k): O(users x items), the results every test was written
  against, used up to ``EXACT_MAX_CELLS`` users x items.
- ``fast``: two stages, vectorized over all interactions: a genre ``k`` from
  ``softmax(3 u)`` (the user's loadings over the genres), then an item of genre ``k`` with
  probability proportional to ``exp(bias_j + 3 v_jk)`` (the affinity of a user whose
  dominant factor is ``k``, loading about 1: one CDF per genre, inverted with
  ``searchsorted``). Pairs drawn twice are dropped and redrawn for the users they leave
  short (20 rounds from the model, then uniformly from the catalogue: only a long history in
  a tiny catalogue gets that far), so every user ends with exactly their drawn count.
  1M users x 1M items x 20 per user takes seconds; the planted structure (dominant genre,
  popularity skew, genre words in the text, ratings from ``u.v``) is the same.

Ratings are ``clip(round(3 + 3 u.v + N(0, 0.5)), 1, 5)``; timestamps are uniform in
[1e9, 1e9 + 1e7) seconds, in random item order within each user. The latent factors (so the
genres, titles and texts) and the per-user counts come from the same draws under both
samplers; the histories differ, and so do the item years and user ages, drawn after them
(moving them would change the exact sampler's output).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

from pipelines.data.dataset import InteractionData, build_data, build_indexed_data

logger = logging.getLogger(__name__)

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
SamplerName = Literal["auto", "exact", "fast"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
EXACT_MAX_CELLS = 20_000_000  # users x items up to which "auto" means "exact"
AFFINITY = 3.0  # scale of u.v in the logits
MODEL_ROUNDS = 20  # fast sampler: redraw rounds from the model before uniform redraws
MAX_ROUNDS = 1000
T0, SPAN = 1_000_000_000, 10_000_000  # timestamps in [T0, T0 + SPAN)


@dataclass
class SyntheticConfig:
    users: int = field(default=300, metadata={"help": "number of users"})
    items: int = field(default=500, metadata={"help": "number of items"})
    factors: int = field(default=8, metadata={"help": "latent dimension (<= 8 genres)"})
    per_user: int = field(default=30, metadata={"help": "median interactions per user"})
    popularity_skew: float = field(default=1.0, metadata={"help": "Zipf exponent of item bias"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    sampler: str = field(
        default="auto",
        metadata={
            "help": "exact (per-user softmax over the catalogue), fast (two-stage, vectorized) "
            f"or auto (exact up to {EXACT_MAX_CELLS:,} users x items, fast above)"
        },
    )

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
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"SyntheticConfig.sampler={self.sampler!r}; expected one of {SAMPLERS}"
            )


def resolve_sampler(config: SyntheticConfig) -> str:
    """The sampler ``config`` runs: its own choice, or for "auto" "exact" up to
    ``EXACT_MAX_CELLS`` users x items and "fast" above."""
    if config.sampler != "auto":
        return config.sampler
    return "exact" if config.users * config.items <= EXACT_MAX_CELLS else "fast"


def make_synthetic(config: SyntheticConfig | None = None) -> InteractionData:
    """Seeded users, items (with genre text) and interactions; see the module docstring."""
    c = config or SyntheticConfig()
    sampler = resolve_sampler(c)
    rng = np.random.default_rng(c.seed)
    item_f = rng.normal(size=(c.items, c.factors)) / np.sqrt(c.factors)
    item_f[np.arange(c.items), rng.integers(0, c.factors, c.items)] += 1.0
    genre = item_f.argmax(1)
    user_f = rng.normal(size=(c.users, c.factors)) / np.sqrt(c.factors)
    user_f[np.arange(c.users), rng.integers(0, c.factors, c.users)] += 1.0
    ranks = rng.permutation(c.items) + 1
    bias = -c.popularity_skew * np.log(ranks)
    bias -= bias.mean()
    counts = np.clip(rng.lognormal(np.log(c.per_user), 0.5, c.users).astype(int), 5, c.items - 1)
    logger.info(
        "synthetic: %d users x %d items, %d interactions drawn, %s sampler",
        c.users,
        c.items,
        int(counts.sum()),
        sampler,
    )
    if sampler == "exact":
        ratings = _exact_ratings(rng, item_f, user_f, bias, counts)
    else:
        inter = _fast_interactions(rng, item_f, genre, user_f, bias, counts)
    item_ids, user_ids = _ids(c.items), _ids(c.users)
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"{GENRE_WORDS[g][0]} story {j + 1}" for j, g in enumerate(genre)],
            "year": rng.integers(1950, 2020, c.items).astype(float),
            "genres": [[GENRE_WORDS[g][0]] for g in genre],
            "text": [GENRE_WORDS[g][1] for g in genre],
        }
    )
    users = pd.DataFrame({"user_id": user_ids, "age": rng.integers(15, 70, c.users).astype(float)})
    source = f"synthetic:{asdict(c)}"
    if sampler == "exact":
        return build_data("synthetic", ratings, items, users, source=source)
    return build_indexed_data("synthetic", inter, items, users, source=source)


def _ids(n: int) -> list[str]:
    """Ids "1".."n", built once per entity."""
    return np.arange(1, n + 1).astype(str).tolist()


def _exact_ratings(
    rng: np.random.Generator,
    item_f: np.ndarray,
    user_f: np.ndarray,
    bias: np.ndarray,
    counts: np.ndarray,
) -> pd.DataFrame:
    """Per user, ``counts[u]`` items without replacement from softmax(3 u.v + bias):
    a ratings frame with string ids. item_f [items, F], user_f [users, F], bias [items],
    counts [users]."""
    n_items = len(item_f)
    rows = []
    for u in range(len(user_f)):
        logits = AFFINITY * item_f @ user_f[u] + bias
        g = rng.gumbel(size=n_items)  # Gumbel top-k == sampling without replacement
        chosen = np.argpartition(-(logits + g), counts[u])[: counts[u]]
        affinity = (item_f[chosen] @ user_f[u]) * AFFINITY
        rating = np.clip(np.round(3 + affinity + rng.normal(0, 0.5, len(chosen))), 1, 5)
        ts = T0 + np.sort(rng.integers(0, SPAN, len(chosen)))
        order = rng.permutation(len(chosen))
        for k, j in enumerate(chosen[order]):
            rows.append((str(u + 1), str(j + 1), float(rating[order][k]), int(ts[k])))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def _fast_interactions(
    rng: np.random.Generator,
    item_f: np.ndarray,
    genre: np.ndarray,
    user_f: np.ndarray,
    bias: np.ndarray,
    counts: np.ndarray,
) -> pd.DataFrame:
    """Two-stage draws (genre, then item within the genre), vectorized: an indexed
    interactions frame (user, item, rating, timestamp), [sum(counts)] rows sorted by (user,
    timestamp, item), no pair twice, ``counts[u]`` rows for user ``u``. Shapes as in
    :func:`_exact_ratings`, genre [items]."""
    n_users, n_items = len(user_f), len(item_f)
    keys = _draw_keys(rng, item_f, genre, user_f, bias, counts)
    # order by (user, time, item): one sort of packed keys when they fit in 64 bits
    ts = rng.integers(0, SPAN, len(keys), dtype=np.uint64)
    user, item = np.divmod(keys, n_items)
    del keys
    ib, tb = int(n_items - 1).bit_length(), int(SPAN - 1).bit_length()
    if int(n_users - 1).bit_length() + tb + ib <= 64:
        packed = (user.astype(np.uint64) << np.uint64(tb + ib)) | (ts << np.uint64(ib))
        packed |= item.astype(np.uint64)
        del user, item, ts
        packed.sort(kind="stable")  # timsort: already in runs, one per user
        item = (packed & np.uint64((1 << ib) - 1)).astype(np.int32)
        ts = ((packed >> np.uint64(ib)) & np.uint64((1 << tb) - 1)).astype(np.int64) + T0
        user = (packed >> np.uint64(tb + ib)).astype(np.int32)
        del packed
    else:  # keys are (user, item)-sorted, so a stable sort on (user, time) breaks ties by item
        order = np.lexsort((ts, user))
        user, item = user[order].astype(np.int32), item[order].astype(np.int32)
        ts = ts[order].astype(np.int64) + T0
        del order
    affinity = np.zeros(len(user))
    for uk, vk in zip(np.ascontiguousarray(user_f.T), np.ascontiguousarray(item_f.T)):
        affinity += uk[user] * vk[item]
    affinity *= AFFINITY
    rating = np.clip(np.round(3 + affinity + rng.normal(0, 0.5, len(user))), 1, 5)
    return pd.DataFrame(
        {"user": user, "item": item, "rating": rating.astype(np.float32), "timestamp": ts},
        copy=False,  # no block consolidation: a copy of every column at 20M rows
    )


def _draw_keys(
    rng: np.random.Generator,
    item_f: np.ndarray,
    genre: np.ndarray,
    user_f: np.ndarray,
    bias: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """The fast sampler's pairs as sorted unique keys user*items+item, ``counts[u]`` for user
    ``u``: one model draw, then redraws (model, at last uniform) for the users left short."""
    n_users, n_items = len(user_f), len(item_f)
    present = np.flatnonzero(np.bincount(genre, minlength=item_f.shape[1]))
    logit = AFFINITY * user_f[:, present]
    pref = np.exp(logit - logit.max(1, keepdims=True))
    pref_cdf = np.cumsum(pref, 1)
    pref_cdf /= pref_cdf[:, -1:]  # [users, genres present]
    members, item_cdfs = [], []
    for k in present:
        m = np.flatnonzero(genre == k)
        w = bias[m] + AFFINITY * item_f[m, k]
        cdf = np.cumsum(np.exp(w - w.max()))
        members.append(m)
        item_cdfs.append(cdf / cdf[-1])

    def draw(who: np.ndarray, n: np.ndarray, uniform: bool) -> np.ndarray:
        """``n[i]`` draws for user ``who[i]`` (ascending): sorted unique keys user*items+item."""
        user = np.repeat(who, n)
        if uniform:
            item = rng.integers(0, n_items, len(user))
        else:
            r = rng.random(len(user))
            g = np.zeros(len(user), np.int8)
            for k in range(len(present) - 1):
                g += r >= np.repeat(pref_cdf[who, k], n)
            r = rng.random(len(user))
            item = np.empty(len(user), np.int64)
            for k, (m, cdf) in enumerate(zip(members, item_cdfs)):
                sel = np.flatnonzero(g == k)
                pos = np.searchsorted(cdf, r[sel], side="right")
                item[sel] = m[np.minimum(pos, len(m) - 1)]
        keys = np.sort(user.astype(np.int64) * n_items + item, kind="stable")  # runs per user
        return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # np.unique hashes: slower

    base = draw(np.arange(n_users), counts, uniform=False)
    extra = np.empty(0, np.int64)  # accepted in the redraw rounds: small, kept sorted
    short = counts - np.bincount(base // n_items, minlength=n_users)
    for rnd in range(MAX_ROUNDS):
        who = np.flatnonzero(short > 0)
        if not len(who):
            break
        logger.debug("synthetic fast sampler: round %d, %d users short", rnd, len(who))
        new = draw(who, short[who], uniform=rnd >= MODEL_ROUNDS)
        new = new[~(_member(base, new) | _member(extra, new))]
        extra = np.sort(np.concatenate([extra, new]))
        short -= np.bincount(new // n_items, minlength=n_users)
    else:
        raise RuntimeError(f"synthetic fast sampler: users still short after {MAX_ROUNDS} rounds")
    return np.insert(base, np.searchsorted(base, extra), extra)


def _member(sorted_keys: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[len(x)] bool: which of ``x`` are in ``sorted_keys`` (ascending)."""
    if not len(sorted_keys):
        return np.zeros(len(x), bool)
    pos = np.minimum(np.searchsorted(sorted_keys, x), len(sorted_keys) - 1)
    return sorted_keys[pos] == x
