"""Reading one table file of yours: CSV/TSV, Parquet, or JSON lines (``.json``/``.jsonl``, one
object per line, as Amazon's review dumps are), optionally gzipped (``.csv.gz``,
``.jsonl.gz``). Rows keep where they came from (the file's own line numbers), so errors can name
them; a library's error is raised as :class:`DataError` naming the file."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.dataset import LINE, DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".json", ".jsonl")
KINDS = ".csv, .tsv, .parquet or .jsonl (JSON lines)"


def table_suffix(path: str | Path) -> str:
    """The table kind of ``path``: its suffix, the one before ``.gz`` for a gzipped file."""
    path = Path(path)
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def read_table(path: Path) -> pd.DataFrame:
    """A CSV/TSV (every cell as text, empty cells as "", index = the file's 1-based line
    numbers; a quoted cell spanning lines shifts the count), a Parquet file (index = 1-based
    row numbers) or JSON lines (cells as JSON gives them, lists included; index = line
    numbers)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"missing file {path}")
    if path.is_dir():
        raise DataError(f"{path}: a folder; expected a {KINDS} file")
    kind = table_suffix(path)
    if kind in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError on a truncated file
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
        df.index = pd.RangeIndex(1, len(df) + 1)
        return df
    if kind in (".json", ".jsonl"):
        return _read_json_lines(path)
    if kind in (".csv", ".tsv", ".txt"):
        return _read_csv(path, "\t" if kind == ".tsv" else ",")
    raise DataError(f"{path}: unknown file type {path.suffix!r}; expected {KINDS}")


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(
            path,
            sep=sep,
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
    except (OSError, EOFError) as e:  # a truncated or non-gzip .csv.gz
        raise DataError(f"{path}: not readable ({e})") from None
    df.index = pd.Index(np.arange(2, len(df) + 2), name=LINE)  # line 1 is the header
    blank = (df.fillna("") == "").all(axis=1)
    return df[~blank.to_numpy()]


def _read_json_lines(path: Path) -> pd.DataFrame:
    """One JSON object per line (a Python-literal line, as in Amazon's 2014 metadata, is read
    too); a file holding one JSON array of objects is read as rows 1..n."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not readable ({e})") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        numbers, where = list(range(1, len(rows) + 1)), "row"
    else:
        rows, numbers, where = [], [], "line"
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                rows.append(_json_object(line, path, n))
                numbers.append(n)
    if not rows:
        raise DataError(f"{path}: the file is empty; expected one JSON object per line")
    for n, row in zip(numbers, rows):
        if not isinstance(row, dict):
            raise DataError(
                f"{path}: {where} {n} holds a JSON {type(row).__name__}; expected an object "
                '{"column": value, ...}'
            )
    index = pd.Index(numbers, name=LINE) if where == "line" else pd.RangeIndex(1, len(rows) + 1)
    return pd.DataFrame(rows, index=index, dtype=object)


def _json_object(line: str, path: Path, n: int):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        try:
            return ast.literal_eval(line.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError(
                f"{path}: line {n} is not valid JSON ({e.msg} at column {e.colno}); expected "
                "one JSON object per line (JSON lines)"
            ) from None
