"""``POST /recommend`` (one user, micro-batched) and ``POST /recommend/batch`` (many users in one
tower call and one search)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from pipelines.serving.answers import answer, fingerprints, to_query
from pipelines.serving.errors import ERRORS, ApiError
from pipelines.serving.limits import check_batch_items
from pipelines.serving.schemas import BatchRequest, RecommendRequest, RecommendResponse, expected
from pipelines.serving.stack import OrjsonResponse
from pipelines.serving.state import State

router = APIRouter()


@router.post("/recommend", response_model=RecommendResponse, responses=ERRORS)
async def recommend(body: RecommendRequest, request: Request, state: State):
    """Top-k items for one user (known id or new history)."""
    e = state.engine  # this request finishes on the engine it started with
    try:
        q = to_query(e, body, state.config)
    finally:
        state.arrived(request)
    if state.batcher is not None:
        res = await state.batcher.submit(e, q)
    else:  # naive: each request its own tower call and search
        loop = asyncio.get_running_loop()
        res = (await loop.run_in_executor(state.executor, state.run_batch, e, [q]))[0]
    return OrjsonResponse({**answer(e, body.user_id, res), **fingerprints(e)})


@router.post("/recommend/batch", responses=ERRORS)
async def recommend_batch(body: BatchRequest, state: State):
    """Many users at once: one user-tower call and one batched search (built and encoded on a
    worker thread: a big batch never holds the event loop)."""
    e, config = state.engine, state.config
    if len(body.queries) > config.max_batch_queries:
        raise ApiError(
            422,
            "invalid_request",
            f"queries has {len(body.queries)} entries, max_batch_queries="
            f"{config.max_batch_queries}",
            [
                {
                    "field": "queries",
                    "got": len(body.queries),
                    "expected": expected("queries", config),
                }
            ],
        )
    check_batch_items([r.k for r in body.queries], config)
    return await run_in_threadpool(_batch_answer, state, e, body)


def _batch_answer(state, e, body: BatchRequest) -> OrjsonResponse:
    """The whole batch answer, off the event loop; the search on the compute thread."""
    config = state.config
    qs = [to_query(e, r, config, f"queries[{i}].") for i, r in enumerate(body.queries)]
    results = state.executor.submit(state.run_batch, e, qs).result()
    return OrjsonResponse(
        {
            "results": [answer(e, r.user_id, res) for r, res in zip(body.queries, results)],
            **fingerprints(e),
        }
    )
