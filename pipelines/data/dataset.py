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

from pipelines.data.values import NUMBER_OR_DATE, flat_strings, genre_list, is_list, unix_seconds

logger = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "year", "genres", "text")
LINE = "line"  # index name of a frame whose labels are its file's own 1-based line numbers


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
        """sha256 of the ids, the interactions, the item table (title, year, genres, text) and
        the user features: labels and models refuse data that differs in any of them."""
        h = hashlib.sha256(self.name.encode())
        for col in INTERACTION_COLUMNS:
            h.update(np.ascontiguousarray(self.interactions[col].to_numpy()).tobytes())
        h.update("\x1f".join(self.users["user_id"]).encode())
        h.update("\x1f".join(self.items["item_id"]).encode())
        h.update("\x1f".join(self.items["title"]).encode())
        h.update(np.ascontiguousarray(self.items["year"].to_numpy(np.float64)).tobytes())
        h.update("\x1f".join("|".join(g) for g in self.items["genres"]).encode())
        h.update("\x1f".join(self.items["text"]).encode())
        for col in sorted(c for c in self.users.columns if c != "user_id"):
            h.update(f"\x1e{col}\x1f".encode())
            h.update("\x1f".join(map(str, self.users[col].tolist())).encode())
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


def _item_text(title, year, genres, text) -> str:
    head = title if pd.isna(year) else f"{title} ({int(year)})"
    parts = [head]
    if len(genres):
        parts.append(", ".join(genres))
    if text:
        parts.append(str(text))
    return ". ".join(parts)


def render_item_text(row) -> str:
    """One item (a row of ``InteractionData.items``) as the teacher reads it:
    ``title (year). genre, genre. text``, leaving out what the item lacks."""
    return _item_text(row["title"], row["year"], row["genres"], row["text"])


def render_item_texts(items: pd.DataFrame) -> list[str]:
    """``[render_item_text(row) for _, row in items.iterrows()]``, the same strings, read
    column-wise: [n_items] texts. ``iterrows`` builds a Series per row (minutes at 1M items);
    this walks the four columns once (about a second)."""
    return [
        _item_text(t, y, g, x)
        for t, y, g, x in zip(
            items["title"].tolist(),
            items["year"].tolist(),
            items["genres"].tolist(),
            items["text"].tolist(),
        )
    ]


def where(frame: pd.DataFrame, pos: int) -> str:
    """Where row ``pos`` of ``frame`` came from: ``line N`` (its file's own 1-based line, when
    the loader numbered the rows: index name ``"line"``), else ``row <index label>``."""
    label = frame.index[pos]
    return f"line {label}" if frame.index.name == LINE else f"row {label}"


def cell(value) -> str:
    """A cell for an error message: ``is empty`` for a missing or blank cell, else
    ``holds 'value'``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "is empty"
    if isinstance(value, str) and not value.strip():
        return "is empty"
    return f"holds {str(value)!r}"


def build_data(
    name: str,
    ratings: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    *,
    source: str = "",
    items_source: str = "",
    users_source: str = "",
    genre_sep: str | None = None,
) -> InteractionData:
    """Validate raw frames (original ids) and index them.

    ``ratings`` has ``user_id``, ``item_id``, ``rating``, ``timestamp`` (original ids, any
    dtype). ``items`` has ``item_id`` plus any of ``title``, ``year``, ``genres`` (list or
    "|"-separated str), ``text``; without it the catalogue is the items seen in ``ratings``.
    Documented repairs (logged): exact duplicate rows are dropped; for a user-item pair rated
    more than once, the latest rating is kept; rows are sorted by (user, timestamp).
    Errors name the source, the line (frames whose index is named ``"line"`` hold their file's
    line numbers) or row, the column and the value. ``genre_sep`` splits string genres (None:
    ``|`` or ``,``).
    """
    src = source or name
    items_src = items_source or f"{src} (item table)"
    users_src = users_source or f"{src} (user table)"
    r = _repair(_checked_ratings(ratings, src), src)
    items = _normalise_items(items, r, items_src, genre_sep)
    item_idx = _item_positions(r, items, src, items_src)
    user_ids = np.array(sorted(r["user_id"].unique(), key=_id_sort_key), dtype=object)
    users = _user_table(users, user_ids, users_src)
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


def _checked_ratings(ratings: pd.DataFrame, src: str) -> pd.DataFrame:
    """The four interaction columns, ids as str and numbers checked (errors name the row)."""
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
    for col, expected in (("rating", "a finite number"), ("timestamp", NUMBER_OR_DATE)):
        num = unix_seconds(r[col]) if col == "timestamp" else pd.to_numeric(r[col], errors="coerce")
        bad = num.isna() | ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{src}: {where(r, i)}, column {col!r} {cell(ratings[col].iloc[i])}; "
                f"expected {expected} ({int(bad.sum())} bad rows in all)"
            )
        r[col] = num
    if (r["timestamp"] < 0).any():
        i = int(np.flatnonzero((r["timestamp"] < 0).to_numpy())[0])
        raise DataError(
            f"{src}: {where(r, i)}, column 'timestamp' is negative ({r['timestamp'].iloc[i]}); "
            "expected seconds >= 0"
        )
    for col in ("user_id", "item_id"):
        raw = ratings[col]
        empty = raw.isna().to_numpy() | (r[col].str.strip() == "").to_numpy()
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise DataError(
                f"{src}: {where(r, i)} has an empty {col}; expected an id in every row "
                f"({int(empty.sum())} rows in all)"
            )
    return r


def _repair(r: pd.DataFrame, src: str) -> pd.DataFrame:
    """The documented repairs (logged): exact duplicates dropped, rows sorted by (user,
    timestamp), the latest rating of a pair rated more than once kept."""
    n0 = len(r)
    r = r.drop_duplicates()
    if len(r) < n0:
        logger.warning("%s: dropped %d exact duplicate interaction rows", src, n0 - len(r))
    if not r["timestamp"].is_monotonic_increasing:
        logger.debug("%s: interactions are not in time order; sorting by (user, timestamp)", src)
    r = r.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    n1 = len(r)
    r = r.drop_duplicates(["user_id", "item_id"], keep="last")
    if len(r) < n1:
        logger.warning(
            "%s: %d user-item pairs were rated more than once; kept the latest rating",
            src,
            n1 - len(r),
        )
    return r


def _item_positions(r: pd.DataFrame, items: pd.DataFrame, src: str, items_src: str) -> np.ndarray:
    """Each interaction's row in ``items``; refuses interactions with items not in it."""
    item_idx = pd.Index(items["item_id"]).get_indexer(r["item_id"])
    if (item_idx < 0).any():
        bad = r[item_idx < 0]
        if bad.index.name == LINE:
            bad = bad.sort_index()
        shown = ", ".join(
            f"item_id {bad['item_id'].iat[k]!r} ({where(bad, k)})" for k in range(min(3, len(bad)))
        )
        raise DataError(
            f"{src}: {len(bad)} interactions name items missing from the item table "
            f"{items_src}, e.g. {shown}; add those items to the item table or drop "
            "the interactions"
        )
    return item_idx


def _user_table(users: pd.DataFrame | None, user_ids: np.ndarray, users_src: str) -> pd.DataFrame:
    """The user table in ``user_ids`` order (just the ids when none is given)."""
    if users is None:
        return pd.DataFrame({"user_id": user_ids})
    if "user_id" not in users.columns:
        raise DataError(
            f"{users_src}: no column 'user_id' (found {list(users.columns)}); map it with "
            "--user-columns user_id=<your column>"
        )
    users = users.copy()
    users["user_id"] = users["user_id"].astype(str)
    _refuse_duplicates(users, "user_id", users_src)
    users = users.set_index("user_id")
    return users.reindex(user_ids).reset_index()


def build_indexed_data(
    name: str,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    *,
    source: str = "",
) -> InteractionData:
    """The fast path of :func:`build_data` for interactions that already refer to indices.

    ``interactions`` has ``user`` (row of ``users``), ``item`` (row of ``items``), ``rating``
    and ``timestamp``: [n] arrays, no string id per interaction (generated data at 20M rows).
    ``users`` has ``user_id`` (unique) plus features; ``items`` is normalised as in
    :func:`build_data`. Refused: indices out of range, non-finite ratings, negative
    timestamps, a (user, item) pair twice. Rows are sorted by (user, timestamp, item) unless
    they already are. Gives what :func:`build_data` gives (the same fingerprint) when every
    user has an interaction and ``users`` is in build_data's id order (numeric ids ascending).
    """
    src = source or name
    for col in INTERACTION_COLUMNS:
        if col not in interactions.columns:
            raise DataError(
                f"{src}: indexed interactions have no column {col!r} (found "
                f"{list(interactions.columns)}); expected {list(INTERACTION_COLUMNS)}"
            )
    if len(interactions) == 0:
        raise DataError(f"{src}: no interactions")
    if "user_id" not in users.columns:
        raise DataError(f"{src} (user table): no column 'user_id' (found {list(users.columns)})")
    items = _normalise_items(items, None, f"{src} (item table)")
    users = users.reset_index(drop=True)
    users["user_id"] = users["user_id"].astype(str)
    _refuse_duplicates(users, "user_id", f"{src} (user table)")
    user = interactions["user"].to_numpy().astype(np.int32)
    item = interactions["item"].to_numpy().astype(np.int32)
    rating = interactions["rating"].to_numpy(np.float32)
    ts = interactions["timestamp"].to_numpy().astype(np.int64)
    for col, idx, n in (("user", user, len(users)), ("item", item, len(items))):
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{src}: row {i}, column {col!r} holds {int(idx[i])}; expected an index in "
                f"[0, {n}) ({int(bad.sum())} bad rows in all)"
            )
    for col, values, bad in (("rating", rating, ~np.isfinite(rating)), ("timestamp", ts, ts < 0)):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{src}: row {i}, column {col!r} holds {values[i].item()!r}; expected "
                f"{'a finite number' if col == 'rating' else 'seconds >= 0'}"
            )
    du, dt, di = np.diff(user), np.diff(ts), np.diff(item)
    if not ((du > 0) | ((du == 0) & ((dt > 0) | ((dt == 0) & (di > 0))))).all():
        order = np.lexsort((item, ts, user))
        user, item, rating, ts = user[order], item[order], rating[order], ts[order]
    key = np.sort(user.astype(np.int64) * len(items) + item, kind="stable")  # runs per user
    twice = np.flatnonzero(key[1:] == key[:-1])
    if len(twice):
        k = int(key[twice[0]])
        raise DataError(
            f"{src}: user {k // len(items)} and item {k % len(items)} (indices) appear together "
            f"more than once ({len(twice)} repeated pairs in all); expected one row per pair"
        )
    inter = pd.DataFrame(
        {"user": user, "item": item, "rating": rating, "timestamp": ts}, copy=False
    )
    return InteractionData(name=name, users=users, items=items, interactions=inter, source=src)


def _id_sort_key(x: str):
    return (0, int(x), "") if x.isdigit() else (1, 0, x)


def _refuse_duplicates(frame: pd.DataFrame, col: str, src: str) -> None:
    dup = frame[col].duplicated(keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        value = frame[col].iat[first]
        second = int(np.flatnonzero(dup & (frame[col] == value).to_numpy())[1])
        raise DataError(
            f"{src}: {col} {value!r} is listed twice ({where(frame, first)} and "
            f"{where(frame, second)}); expected one row per id "
            f"({int(frame[col].duplicated().sum())} repeated ids in all)"
        )


def _normalise_items(
    items: pd.DataFrame | None, r: pd.DataFrame | None, src: str, genre_sep: str | None = None
) -> pd.DataFrame:
    if items is None:
        ids = sorted(r["item_id"].unique(), key=_id_sort_key)
        items = pd.DataFrame({"item_id": ids})
    elif "item_id" not in items.columns:
        raise DataError(
            f"{src}: no column 'item_id' (found {list(items.columns)}); map it with "
            "--item-columns item_id=<your column>"
        )
    items = items.copy()
    items["item_id"] = items["item_id"].astype(str)
    blank = items["item_id"].str.strip() == ""
    if blank.any():
        raise DataError(
            f"{src}: {where(items, int(np.flatnonzero(blank.to_numpy())[0]))} has an empty item_id"
        )
    _refuse_duplicates(items, "item_id", src)
    items = items.reset_index(drop=True)
    if "title" not in items:
        items["title"] = ""
    title = items["title"].fillna("").astype(str).str.strip()
    if "year" not in items:  # "Toy Story (1995)": title "Toy Story", year 1995
        parts = title.str.extract(r"^(.*?)\s*\((\d{4})\)$")
        dated = parts[1].notna()
        title, items["year"] = title.where(~dated, parts[0]), parts[1]
    untitled = (title == "").to_numpy()
    if 0 < untitled.sum() < len(items):
        logger.info(
            "%s: %d items have no title; they are called 'item <id>'", src, int(untitled.sum())
        )
    items["title"] = np.where(untitled, "item " + items["item_id"], title)
    if "year" not in items:
        items["year"] = np.nan
    items["year"] = pd.to_numeric(items["year"], errors="coerce").astype(float)
    if "genres" not in items:
        items["genres"] = [[] for _ in range(len(items))]
    items["genres"] = [genre_list(g, genre_sep) for g in items["genres"]]
    if "text" not in items:
        items["text"] = ""
    items["text"] = [" ".join(flat_strings(x)) if is_list(x) else x for x in items["text"]]
    items["text"] = items["text"].fillna("").astype(str)
    return items[list(ITEM_COLUMNS)]
