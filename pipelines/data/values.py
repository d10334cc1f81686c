"""Reading one cell of your tables: a timestamp as unix seconds, a genres cell as a list, a
list-valued cell (JSON lines) as its strings."""

from __future__ import annotations

import numpy as np
import pandas as pd

EPOCH = pd.Timestamp(0, tz="UTC")
NUMBER_OR_DATE = "unix seconds or an ISO-8601 date such as 1997-12-04 15:55:49"


def unix_seconds(raw: pd.Series) -> pd.Series:
    """Timestamps as unix seconds (float, NaN where unreadable): numbers as they are, ISO-8601
    dates and times (``1997-12-04 15:55:49``, ``1997-12-04T15:55:49Z``; no zone means UTC) and
    datetime columns (Parquet) converted."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        dates = pd.to_datetime(raw, utc=True)
        return ((dates - EPOCH) / pd.Timedelta(seconds=1)).astype(float).floordiv(1)
    num = pd.to_numeric(raw, errors="coerce")
    text = num.isna() & raw.notna()
    if text.any():
        dates = pd.to_datetime(
            raw[text].astype(str).str.strip(), format="ISO8601", utc=True, errors="coerce"
        )
        num = num.astype(float)
        num[text] = ((dates - EPOCH) / pd.Timedelta(seconds=1)).astype(float).floordiv(1)
    return num


NO_GENRE = "(no genres listed)"  # MovieLens's word for none


def genre_list(g, sep: str | None = None) -> list[str]:
    """A genres cell as a list: a list (of lists: Amazon's category paths, flattened, each
    once) or a ``sep``-separated string (None: ``|`` or ``,``); ``(no genres listed)`` is
    none."""
    if is_list(g):
        return [x for x in dict.fromkeys(flat_strings(g)) if x != NO_GENRE]
    if g is None or (isinstance(g, float) and np.isnan(g)):
        return []
    text = str(g)
    if sep is None:
        text, sep = text.replace(",", "|"), "|"
    return [x.strip() for x in text.split(sep) if x.strip() and x.strip() != NO_GENRE]


def flat_strings(x) -> list[str]:
    """The non-empty strings in a cell (a value, or lists of them, nested); [] if missing."""
    if is_list(x):
        return [s for v in x for s in flat_strings(v)]
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return []
    return [str(x).strip()] if str(x).strip() else []


def is_list(x) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))
