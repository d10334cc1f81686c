"""The load test's reference peer: an empty endpoint of the same framework.

``create_empty_app()`` answers ``POST /recommend`` and ``POST /recommend/batch`` with the same
request validation (the same pydantic bodies), the same orjson answers and a fixed list of items: no model, no
index. What it costs is what FastAPI, uvicorn and JSON cost; ``recdistill bench-serve`` runs
it with ``python -m uvicorn pipelines.serving.peers:create_empty_app --factory``.
"""

from __future__ import annotations

from fastapi import FastAPI

from pipelines.serving.schemas import BatchRequest, RecommendRequest
from pipelines.serving.stack import OrjsonResponse

FIXED = [{"id": str(i), "score": 1.0 - i / 100, "title": f"item {i}"} for i in range(1, 11)]


def create_empty_app() -> FastAPI:
    app = FastAPI(title="recdistill empty peer")
    fp = {"model_fingerprint": "empty", "index_fingerprint": "empty"}

    @app.post("/recommend")
    async def recommend(body: RecommendRequest):
        return OrjsonResponse(
            {"user_id": body.user_id, "items": FIXED[: body.k], "source": "fixed", **fp}
        )

    @app.post("/recommend/batch")
    async def recommend_batch(body: BatchRequest):
        res = [
            {"user_id": q.user_id, "items": FIXED[: q.k], "source": "fixed"} for q in body.queries
        ]
        return OrjsonResponse({"results": res, **fp})

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    return app
