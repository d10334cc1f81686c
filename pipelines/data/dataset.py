"""The one interaction data model used by every job.

Users and items keep their original ids (strings) and get contiguous indices: row ``i`` of
``users`` is user index ``i`` and row ``j`` of ``items`` is item index ``j``. Interactions refer
to users and items by index.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "year", "genres", "text")


class DataError(ValueError):
    """Bad input data: the message names the source, the column or row, and what was expected."""


@dataclass
class InteractionData:
    """Users, items (with text fields) and interactions.

    - ``users``: one row per user index; column ``user_id`` (str) plus optional features
      (``age`` float, ``gender`` str, ``occupation`` str).
    - ``items``: one row per item index; ``item_id`` (str), ``title`` (str), ``year``
      (float, NaN when unknown), ``genres`` (list[str]), ``text`` (str, free text, may be "").
    - ``interactions``: ``user`` (int32 index), ``item`` (int32 index), ``rating`` (float32,
      the weight for implicit data), ``timestamp`` (int64, seconds).
    """

    name: str
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    source: str = ""

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def fingerprint(self) -> str:
        """sha256 of the ids and interactions: labels and models refuse data that differs."""
        h = hashlib.sha256(self.name.encode())
        for col in INTERACTION_COLUMNS:
            h.update(np.ascontiguousarray(self.interactions[col].to_numpy()).tobytes())
        h.update("\x1f".join(self.users["user_id"]).encode())
        h.update("\x1f".join(self.items["item_id"]).encode())
        return h.hexdigest()[:16]

    def stats(self) -> dict:
        per_user = np.bincount(self.interactions["user"], minlength=self.n_users)
        per_item = np.bincount(self.interactions["item"], minlength=self.n_items)
        n = len(self.interactions)
        return {
            "name": self.name,
            "source": self.source,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "density": n / max(1, self.n_users * self.n_items),
            "interactions_per_user_median": float(np.median(per_user)),
            "interactions_per_user_min": int(per_user.min()) if n else 0,
            "items_without_interactions": int((per_item == 0).sum()),
            "top1pct_items_share": float(
                np.sort(per_item)[::-1][: max(1, self.n_items // 100)].sum() / max(1, n)
            ),
            "rating_mean": float(self.interactions["rating"].mean()) if n else float("nan"),
            "fingerprint": self.fingerprint(),
        }


def render_item_text(row) -> str:
    year = row["year"]
    head = row["title"] if pd.isna(year) else f"{row['title']} ({int(year)})"
    parts = [head]
    if len(row["genres"]):
        parts.append(", ".join(row["genres"]))
    if row["text"]:
        parts.append(str(row["text"]))
    return ". ".join(parts)


def build_data(
    name: str,
    ratings: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    *,
    source: str = "",
) -> InteractionData:
    """Validate raw frames (original ids) and index them.

    ``ratings`` has ``user_id``, ``item_id``, ``rating``, ``timestamp`` (original ids, any
    dtype). ``items`` has ``item_id`` plus any of ``title``, ``year``, ``genres`` (list or
    "|"-separated str), ``text``; without it the catalogue is the items seen in ``ratings``.
    Documented repairs (logged): exact duplicate rows are dropped; for a user-item pair rated
    more than once, the latest rating is kept; rows are sorted by (user, timestamp).
    """
    src = source or name
    for col in ("user_id", "item_id", "rating", "timestamp"):
        if col not in ratings.columns:
            raise DataError(
                f"{src}: interactions have no column {col!r} (found {list(ratings.columns)}); "
                "expected user_id, item_id, rating, timestamp"
            )
    if len(ratings) == 0:
        raise DataError(f"{src}: no interactions")
    r = ratings[["user_id", "item_id", "rating", "timestamp"]].copy()
    r["user_id"] = r["user_id"].astype(str)
    r["item_id"] = r["item_id"].astype(str)
    for col in ("rating", "timestamp"):
        num = pd.to_numeric(r[col], errors="coerce")
        bad = num.isna() | ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{src}: column {col!r} row {i} holds {r[col].iloc[i]!r}; expected a finite number "
                f"({int(bad.sum())} bad rows in all)"
            )
        r[col] = num
    if (r["timestamp"] < 0).any():
        i = int(np.flatnonzero((r["timestamp"] < 0).to_numpy())[0])
        raise DataError(f"{src}: column 'timestamp' row {i} is negative ({r['timestamp'].iloc[i]})")
    empty = (r["user_id"].str.strip() == "") | (r["item_id"].str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(f"{src}: row {i} has an empty user_id or item_id")

    n0 = len(r)
    r = r.drop_duplicates()
    if len(r) < n0:
        logger.warning("%s: dropped %d exact duplicate interaction rows", src, n0 - len(r))
    if not r["timestamp"].is_monotonic_increasing:
        logger.info("%s: interactions are not in time order; sorting by (user, timestamp)", src)
    r = r.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    n1 = len(r)
    r = r.drop_duplicates(["user_id", "item_id"], keep="last")
    if len(r) < n1:
        logger.warning(
            "%s: %d user-item pairs were rated more than once; kept the latest rating",
            src,
            n1 - len(r),
        )

    items = _normalise_items(items, r, src)
    item_index = pd.Index(items["item_id"])
    if not item_index.is_unique:
        dup = item_index[item_index.duplicated()][0]
        raise DataError(f"{src}: item table lists item_id {dup!r} more than once")
    item_idx = item_index.get_indexer(r["item_id"])
    if (item_idx < 0).any():
        unknown = r["item_id"].to_numpy()[item_idx < 0]
        raise DataError(
            f"{src}: {len(unknown)} interactions refer to items missing from the item table, "
            f"e.g. item_id {unknown[0]!r}"
        )

    user_ids = np.array(sorted(r["user_id"].unique(), key=_id_sort_key), dtype=object)
    if users is not None:
        users = users.copy()
        users["user_id"] = users["user_id"].astype(str)
        users = users.drop_duplicates("user_id").set_index("user_id")
        users = users.reindex(user_ids).reset_index()
    else:
        users = pd.DataFrame({"user_id": user_ids})
    user_idx = pd.Index(user_ids).get_indexer(r["user_id"])

    inter = pd.DataFrame(
        {
            "user": user_idx.astype(np.int32),
            "item": item_idx.astype(np.int32),
            "rating": r["rating"].to_numpy(np.float32),
            "timestamp": r["timestamp"].to_numpy().astype(np.int64),
        }
    )
    inter = inter.sort_values(["user", "timestamp", "item"], kind="stable").reset_index(drop=True)
    return InteractionData(name=name, users=users, items=items, interactions=inter, source=src)


def _id_sort_key(x: str):
    return (0, int(x), "") if x.isdigit() else (1, 0, x)


def _normalise_items(items: pd.DataFrame | None, r: pd.DataFrame, src: str) -> pd.DataFrame:
    if items is None:
        ids = sorted(r["item_id"].unique(), key=_id_sort_key)
        items = pd.DataFrame({"item_id": ids})
    elif "item_id" not in items.columns:
        raise DataError(f"{src}: item table has no column 'item_id' (found {list(items.columns)})")
    items = items.copy().reset_index(drop=True)
    items["item_id"] = items["item_id"].astype(str)
    if "title" not in items:
        items["title"] = "item " + items["item_id"]
    items["title"] = items["title"].fillna("").astype(str)
    if "year" not in items:
        items["year"] = np.nan
    items["year"] = pd.to_numeric(items["year"], errors="coerce").astype(float)
    if "genres" not in items:
        items["genres"] = [[] for _ in range(len(items))]
    items["genres"] = [_genres(g) for g in items["genres"]]
    if "text" not in items:
        items["text"] = ""
    items["text"] = items["text"].fillna("").astype(str)
    return items[list(ITEM_COLUMNS)]


def _genres(g) -> list[str]:
    if isinstance(g, (list, tuple, np.ndarray)):
        return [str(x) for x in g if str(x)]
    if g is None or (isinstance(g, float) and np.isnan(g)):
        return []
    return [x for x in str(g).replace(",", "|").split("|") if x.strip()]
