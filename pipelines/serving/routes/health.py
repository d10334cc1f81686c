"""``GET /healthz`` (the process answers), ``GET /readyz`` (a run is loaded; what it is) and
``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipelines.serving.state import State

router = APIRouter()


@router.get("/healthz")
async def healthz():
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State):
    """Readiness: a run is loaded and the batcher runs; what is served (503 "loading" while
    the first load runs, "failed" with the reason if it failed)."""
    if state.engine is None:
        body = {"status": "failed", "error": state.load_error} if state.load_error else {}
        return JSONResponse(body or {"status": "loading"}, status_code=503)
    ok = state.started and (state.batcher is None or state.batcher.running)
    body = {"status": "ready" if ok else "starting", "reloading": state.reloading}
    body["pid"] = os.getpid()  # which worker answered (--workers N)
    body["queued"] = 0 if state.batcher is None else state.batcher.pending
    body.update(state.engine.describe())
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(state: State):
    """Prometheus text: requests, latency, batch sizes, the loaded model."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
