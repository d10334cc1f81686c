"""``load_dataset``: the ``--dataset`` spec string that picks a loader: MovieLens-100K from
the installed recbole wheel (default) or GroupLens raw formats (``grouplens``), generic
CSV/Parquet with a column mapping (``tables``), or a seeded synthetic dataset (``synthetic``).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.data.dataset import DataError, InteractionData
from pipelines.data.grouplens import load_grouplens, load_ml100k
from pipelines.data.readers import KINDS, TABLE_SUFFIXES, table_suffix
from pipelines.data.tables import TableSpec, is_table, load_table, table_spec

__all__ = ["TableSpec", "load_dataset", "load_grouplens", "load_ml100k", "load_table", "table_spec"]


def load_dataset(spec: str) -> InteractionData:
    """``ml-100k`` (packaged) | ``grouplens:/path`` (or the folder itself: ML-100K, ML-1M,
    ML-10M, and the csv layout of ML-20M/25M/latest) | ``synthetic[:users=..,items=..,seed=..]``
    (any :class:`SyntheticConfig` field, ``sampler=exact|fast`` included)
    | your own files: a ``.csv``/``.tsv``/``.parquet``/``.jsonl`` path or a folder, with options
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
    if is_table(spec):
        t = TableSpec.parse(spec).resolved()
        head = Path(t.interactions)
        if table_suffix(head) not in TABLE_SUFFIXES:
            raise DataError(
                f"dataset spec {spec!r}: {head} is not a {KINDS} file or a folder holding "
                "interactions.csv"
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
            name=root.name if root.is_dir() else Path(head.name.removesuffix(".gz")).stem,
        )
    p = Path(spec)
    if p.is_dir():
        return load_grouplens(p)
    raise DataError(
        f"unknown dataset {spec!r}; expected 'ml-100k', 'grouplens:/path', "
        f"'synthetic[:users=..,items=..]', a {KINDS} file or a folder holding "
        "interactions.csv"
    )
