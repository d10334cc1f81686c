"""Your own interactions as CSV/TSV or Parquet files, with an optional item table and user
table, each with a column mapping; ``TableSpec`` is the ``--dataset`` string that names them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd

from pipelines.data.dataset import DataError, InteractionData, build_data, cell, where
from pipelines.data.grouplens import grouplens_layout
from pipelines.data.readers import TABLE_SUFFIXES, read_table, table_suffix

# our column name -> what it means; the flags --columns/--item-columns/--user-columns map
# these names to a file's own
COLUMNS = {
    "columns": ("user_id", "item_id", "rating", "timestamp"),
    "item_columns": ("item_id", "title", "year", "genres", "text"),
    "user_columns": ("user_id", "age", "gender", "occupation"),
}
# file stems looked for in a --dataset folder (and beside an interactions file, for the warning)
FOLDER_FILES = {
    "interactions": ("interactions", "ratings"),
    "items": ("items", "movies"),
    "users": ("users",),
}
GENRE_SEP = "|"
SPEC_KEYS = ("items", "users", *COLUMNS, "genre_sep")
_SAFE = "/\\:=,|;@+ ~"
logger = logging.getLogger(__name__)


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
        """A folder's files filled in: ``interactions.*`` and, unless given, the item table
        (``items.*`` or ``movies.*``, when just one is there) and ``users.*``. An interactions
        table with no item table (none given, none found) is logged as a WARNING naming what
        was looked for: the catalogue is then only the items seen, with no titles."""
        root = Path(self.interactions)
        if not root.is_dir():
            if self.items is None:
                _warn_no_items(root, root.parent, _find(root.parent, "items"))
            return self
        found = {kind: _find(root, kind) for kind in FOLDER_FILES}
        for kind, hits in found.items():
            if len(hits) > 1 and not (kind == "items" and self.items):
                raise DataError(
                    f"{root}: both {hits[0].name} and {hits[1].name}; keep one {kind} file"
                    + (" or name the one to use with --items" if kind == "items" else "")
                )
        if not found["interactions"]:
            raise DataError(
                f"{root}: no interactions file; expected interactions.csv (or .tsv, .parquet, "
                ".jsonl) and optionally items.csv and users.csv, or GroupLens files (u.data, "
                "ratings.dat, ratings.csv)"
            )
        head = found["interactions"][0]
        if self.items is None and not found["items"]:
            _warn_no_items(head, root, [])
        elif self.items is None:
            logger.info("%s: the item table is %s", root, found["items"][0].name)
        return replace(
            self,
            interactions=str(head),
            items=self.items or (str(found["items"][0]) if found["items"] else None),
            users=self.users or (str(found["users"][0]) if found["users"] else None),
        )


def _find(root: Path, kind: str) -> list[Path]:
    """The files of ``kind`` (a key of ``FOLDER_FILES``) in folder ``root``."""
    return [
        root / f"{stem}{suf}"
        for stem in FOLDER_FILES[kind]
        for suf in (*TABLE_SUFFIXES, *(s + ".gz" for s in TABLE_SUFFIXES))
        if (root / f"{stem}{suf}").is_file()
    ]


def _warn_no_items(head: Path, root: Path, beside: list[Path]) -> None:
    looked = "/".join(FOLDER_FILES["items"])
    if beside:
        logger.warning(
            "%s: no item table given; %s beside it was not read (pass --items %s to use it): "
            "the catalogue is only the items the interactions name, with no titles, years or "
            "genres",
            head,
            beside[0].name,
            beside[0],
        )
    else:
        logger.warning(
            "%s: no item table (--items, or %s.csv/.tsv/.parquet/.jsonl in %s); the catalogue "
            "is only the items the interactions name, with no titles, years or genres",
            head,
            looked,
            root,
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


def absolute_spec(spec: str) -> str:
    """``spec`` with the local paths it names (the interactions, ``items``, ``users``, a
    ``grouplens:`` folder) made absolute where they exist, so that the spec an artifact records
    reads the same data from any working folder (a run copied elsewhere, a server started from
    another folder). The dataset's name, and so its fingerprint, does not change."""
    if spec.startswith("grouplens:"):
        path = Path(spec.removeprefix("grouplens:"))
        return f"grouplens:{path.resolve()}" if path.exists() else spec
    if not is_table(spec):
        return spec
    t = TableSpec.parse(spec)

    def absolute(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p is not None and Path(p).exists() else p

    return replace(
        t, interactions=absolute(t.interactions), items=absolute(t.items), users=absolute(t.users)
    ).to_spec()


def is_table(spec: str) -> bool:
    """``spec`` names your own files: a table file, a folder that is not a GroupLens one, or
    anything with ``?options``."""
    head = Path(unquote(spec.partition("?")[0]))
    return (
        table_suffix(head) in TABLE_SUFFIXES
        or (head.is_dir() and grouplens_layout(head) is None)
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
    columns = dict(columns or {})
    ratings = _pick(read_table(path), columns, "columns", path, required=("user_id", "item_id"))
    if "rating" not in ratings:
        ratings["rating"] = 1.0
    if "timestamp" not in ratings:
        ratings["timestamp"] = range(len(ratings))
    items = users = None
    if items_path is not None:
        items = _pick(
            read_table(Path(items_path)),
            item_columns,
            "item_columns",
            Path(items_path),
            required=("item_id",),
            fallback={"item_id": columns.get("item_id")},
        )
    if users_path is not None:
        users = _pick(
            read_table(Path(users_path)),
            user_columns,
            "user_columns",
            Path(users_path),
            required=("user_id",),
            fallback={"user_id": columns.get("user_id")},
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
    df: pd.DataFrame,
    mapping: dict[str, str] | None,
    key: str,
    path: Path,
    required: tuple,
    fallback: dict[str, str | None] | None = None,
) -> pd.DataFrame:
    """Our columns of ``df`` (``mapping``: ours -> the file's), under our names. A column of
    ours not in ``mapping`` is the file's column of ``fallback`` (the interactions' own name
    for the id: ``--columns item_id=movieId`` reads an item table's ``movieId``) or else of
    our name."""
    mapping = dict(mapping or {})
    flag = "--" + key.replace("_", "-")
    out = {}
    for ours in COLUMNS[key]:
        names = [mapping[ours]] if ours in mapping else [(fallback or {}).get(ours), ours]
        names = list(dict.fromkeys(n for n in names if n))
        theirs = next((n for n in names if n in df.columns), None)
        if theirs is not None:
            out[ours] = df[theirs]
        elif ours in required or ours in mapping:
            shown = " or ".join(repr(n) for n in names)
            raise DataError(
                f"{path}: no column {shown} for {ours} (found {list(df.columns)}); map it "
                f"with {flag} {ours}=<your column>"
            )
    return pd.DataFrame(out, index=df.index)
