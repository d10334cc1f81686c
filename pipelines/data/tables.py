"""Your own interactions as CSV/TSV or Parquet files, with an optional item table and user
table, each with a column mapping; ``TableSpec`` is the ``--dataset`` string that names them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd

from pipelines.data.dataset import LINE, DataError, InteractionData, build_data, cell, where

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
    if not is_table(dataset):
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


def is_table(spec: str) -> bool:
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
