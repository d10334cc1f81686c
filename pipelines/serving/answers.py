"""Between HTTP and the retriever: a validated request body -> a :class:`Query` (ids to rows,
limits checked, errors naming the field), and rows and scores -> the JSON items."""

from __future__ import annotations

import numpy as np

from pipelines.serving.artifacts import Engine
from pipelines.serving.config import ServeConfig
from pipelines.serving.errors import ApiError
from pipelines.serving.schemas import EXPECTED, RecommendRequest, expected
from student.serving import Query

MAX_NAMED = 20  # unknown ids named in one error message


def to_query(e: Engine, r: RecommendRequest, config: ServeConfig, where: str = "") -> Query:
    """The :class:`Query` of one recommend body; ``where`` prefixes the field names
    (``queries[3].`` in a batch)."""
    if r.k > config.max_k:
        raise ApiError(
            422,
            "invalid_request",
            f"{where}k={r.k} exceeds max_k={config.max_k}",
            [{"field": f"{where}k", "got": r.k, "expected": expected("k", config)}],
        )
    exclude = item_rows(e, r.exclude, f"{where}exclude")
    if r.user_id is not None:
        u = _user_row(e, r.user_id, where)
        q = Query(user=u, k=r.k, exclude=exclude, exclude_seen=r.exclude_seen)
    else:
        q = Query(
            history=item_rows(e, r.history, f"{where}history"),
            k=r.k,
            exclude=exclude,
            exclude_seen=r.exclude_seen,
        )
    left = e.n_items - len(e.retriever.excluded_rows(q))
    if r.k > left:
        raise ApiError(
            422,
            "invalid_request",
            f"{where}k={r.k} but only {left} items are left after exclusions",
            [{"field": f"{where}k", "got": r.k, "expected": f"an integer in [1, {left}]"}],
        )
    return q


def _user_row(e: Engine, user_id: str, where: str) -> int:
    u = e.user_pos.get(user_id)
    if u is None:
        raise ApiError(
            404,
            "unknown_user",
            f"{where}user_id {user_id!r} is not a user of the served run; send its history instead",
            [{"field": f"{where}user_id", "got": user_id, "expected": EXPECTED["user_id"]}],
        )
    return u


def item_rows(e: Engine, ids: list[str], field: str) -> np.ndarray:
    """Catalogue rows of item ``ids``; unknown ids are a 422 naming up to MAX_NAMED of them."""
    rows = [e.item_pos.get(i) for i in ids]
    unknown = [i for i, r in zip(ids, rows) if r is None]
    if unknown:
        shown = unknown[:MAX_NAMED]
        more = f" (and {len(unknown) - len(shown)} more)" if len(unknown) > len(shown) else ""
        raise ApiError(
            422,
            "unknown_items",
            f"{field}: unknown item id(s) {shown}{more}; not in the served catalogue",
            [{"field": field, "got": shown, "expected": EXPECTED["history"]}],
        )
    return np.array(rows, dtype=np.int64)


def items(e: Engine, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
    """``[{"id", "score", "title"}]`` of catalogue ``rows``, best first."""
    return [
        {"id": str(e.item_ids[r]), "score": float(s), "title": e.titles[r]}
        for r, s in zip(rows.tolist(), scores.tolist())
    ]


def answer(e: Engine, user_id: str | None, res) -> dict:
    """One user's answer (without the fingerprints)."""
    return {"user_id": user_id, "items": items(e, res.rows, res.scores), "source": res.source}


def fingerprints(e: Engine) -> dict:
    return {"model_fingerprint": e.model_fingerprint, "index_fingerprint": e.index_fingerprint}
