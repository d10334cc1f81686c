"""``GET /items/{item_id}/similar``: nearest items in the index by the item tower's embedding
(cold items, with no train interactions, are there through their content)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter
from fastapi import Query as QueryParam
from fastapi.responses import JSONResponse

from pipelines.serving.answers import fingerprints, items
from pipelines.serving.errors import ERRORS, ApiError
from pipelines.serving.state import State
from student.serving import search_excluding

router = APIRouter()


@router.get("/items/{item_id}/similar", responses=ERRORS)
async def similar(item_id: str, state: State, k: Annotated[int, QueryParam(ge=1)] = 10):
    """Items nearest to ``item_id`` by the item tower (cold items included)."""
    e = state.engine
    row = e.item_pos.get(item_id)
    if row is None:
        raise ApiError(
            404,
            "unknown_item",
            f"item_id {item_id!r} is not in the served catalogue",
            [{"field": "item_id", "got": item_id, "expected": "an item id of the catalogue"}],
        )
    top = min(state.config.max_k, e.n_items - 1)
    if k > top:
        raise ApiError(
            422,
            "invalid_request",
            f"k={k} is out of range",
            [{"field": "k", "got": k, "expected": f"an integer in [1, {top}]"}],
        )
    query = e.item_emb[row : row + 1]
    if e.index.config.bias:  # [v, 0]: nearest by the item vectors alone, not by their bias
        query = np.hstack([query[:, :-1], np.zeros((1, 1), np.float32)])
    loop = asyncio.get_running_loop()
    rows, scores = await loop.run_in_executor(
        state.executor,
        search_excluding,
        query,
        [k],
        [np.array([row], np.int64)],
        e.index,
    )
    return JSONResponse(
        {
            "item": {"id": item_id, "title": e.titles[row], "cold": bool(e.cold[row])},
            "items": items(e, rows[0], scores[0]),
            **fingerprints(e),
        }
    )
