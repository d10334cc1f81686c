"""The HTTP application: ``create_app(config)`` -> a FastAPI app (OpenAPI page at ``/docs``).

Endpoints (JSON; errors are ``{"error": code, "message": ..., "detail": [{"field", "message",
"expected", ...}]}`` with a 4xx status, never a 500 for bad input):

- ``POST /recommend``: ``{"user_id": "196"}`` (a known user: its id and train history) or
  ``{"history": ["242", "302"]}`` (a new user, most recent first, encoded by the history-pooled
  user tower with no id; an empty history is answered by train popularity, ``"source":
  "popularity"``, scores = train interaction counts); ``k`` (1..max_k, default 10),
  ``exclude_seen`` (default true: a known user's train items, a new user's history), ``exclude``
  (item ids). Answer: items (id, score, title), source, model and index fingerprints.
  Concurrent requests are micro-batched (:mod:`pipelines.serving.batching`).
- ``POST /recommend/batch``: ``{"queries": [<recommend body>, ...]}``, one tower call and one
  search for all of them.
- ``GET /items/{item_id}/similar?k=10``: nearest items in the index by the item tower's
  embedding (cold items, with no train interactions, are there through their content).
- ``GET /healthz`` (the process answers), ``GET /readyz`` (a run is loaded; what it is; 503
  ``loading`` while ``create_app(..., background=True)`` loads it, ``failed`` with the reason),
  ``GET /metrics`` (Prometheus text).
- ``POST /admin/reload`` (loopback only unless ``admin_anywhere``), or SIGHUP: load a run (the
  configured one, or ``{"run": ..., "model": ..., "index": ...}``), check it, swap it in
  atomically; requests already running finish on the old one; a bad run is refused (422) and
  the old keeps serving.

Layout: the routes are in :mod:`pipelines.serving.routes` (one router per concern), the bodies
in ``schemas``, errors in ``errors``, the shared state (the ``State`` dependency) in ``state``.

Threads: the event loop parses and answers HTTP; one compute thread runs every tower call and
search, with ``torch_threads`` torch and ``faiss_threads`` faiss threads (set in that thread,
where they apply); a reload loads on a third thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pipelines.serving.artifacts import Engine
from pipelines.serving.config import ServeConfig
from pipelines.serving.errors import EXCEPTION_HANDLERS, ApiError
from pipelines.serving.middleware import ServingMiddleware
from pipelines.serving.routes import ROUTERS
from pipelines.serving.schemas import ReloadRequest
from pipelines.serving.state import ServingState, load, set_threads

logger = logging.getLogger(__name__)


def create_app(
    config: ServeConfig, engine: Engine | None = None, background: bool = False
) -> FastAPI:
    """The application for ``config``; loads the run now (``engine`` reuses a loaded one), or
    with ``background`` once started, on a thread (``/readyz`` 503 "loading" until then).

    Raises :class:`ServeError` for a run that cannot be served (loaded now)."""
    set_threads(config)
    if engine is None and not background:
        engine = load(config)
    state = ServingState(config, engine)
    app = FastAPI(
        title="recdistill",
        summary="two-tower student recommendations over a FAISS index",
        version="1",
        lifespan=_lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.serving = state
    app.add_middleware(ServingMiddleware, state=state)
    for router in ROUTERS:
        app.include_router(router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Start the batcher and the SIGHUP reload; on shutdown stop them and the compute thread."""
    state: ServingState = app.state.serving
    if state.batcher is not None:
        state.batcher.start()
    state.started = True
    loading = None
    if state.engine is None:
        loading = asyncio.create_task(state.load_first())  # the port is open meanwhile
    sighup = False
    if state.config.sighup and threading.current_thread() is threading.main_thread():
        try:
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(sighup_reload(state))
            )
            sighup = True
        except (NotImplementedError, RuntimeError, ValueError):
            logger.warning("SIGHUP reload unavailable on this platform/thread")
    state.write_state()
    yield
    state.started = False
    if loading is not None and not loading.done():
        loading.cancel()
    if sighup:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    if state.batcher is not None:
        await state.batcher.stop()
    state.executor.shutdown(wait=True)


async def sighup_reload(state: ServingState) -> None:
    """The SIGHUP reload: a refused one is logged in one line by ``reload`` (no task left
    holding an exception nobody retrieves)."""
    try:
        await state.reload(ReloadRequest())
    except ApiError as exc:
        if exc.code != "reload_refused":  # a refused reload was logged by reload
            logger.warning("SIGHUP reload not done: %s", exc.message)
