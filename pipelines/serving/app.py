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
- ``GET /healthz`` (the process answers), ``GET /readyz`` (a run is loaded; what it is),
  ``GET /metrics`` (Prometheus text).
- ``POST /admin/reload`` (loopback only unless ``admin_anywhere``), or SIGHUP: load a run (the
  configured one, or ``{"run": ..., "model": ..., "index": ...}``), check it, swap it in
  atomically; requests already running finish on the old one; a bad run is refused (422) and
  the old keeps serving.

Threads: the event loop parses and answers HTTP; one compute thread runs every tower call and
search, with ``torch_threads`` torch and ``faiss_threads`` faiss threads (set in that thread,
where they apply); a reload loads on a third thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi import Query as QueryParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.io import write_json
from pipelines.serving.artifacts import (
    Engine,
    ServeError,
    check_replacement,
    load_engine,
    resolve_run,
)
from pipelines.serving.batching import MicroBatcher
from pipelines.serving.config import ServeConfig
from student.serving import Query, search_excluding

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_NAMED = 20  # unknown ids named in one error message
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


# ---------------------------------------------------------------------------- request bodies
class RecommendRequest(BaseModel):
    """One user: ``user_id`` (known) or ``history`` (new), not both."""

    model_config = ConfigDict(extra="forbid")

    user_id: StrictStr | None = Field(
        None, description="a known user's id (as in the dataset)", examples=["196"]
    )
    history: list[StrictStr] | None = Field(
        None,
        description="a new user's item ids, most recent first; [] = popularity",
        examples=[["242", "302"]],
    )
    k: StrictInt = Field(10, ge=1, description="how many items (at most max_k, default 1000)")
    exclude_seen: StrictBool = Field(
        True, description="drop the user's train items (known) or history (new)"
    )
    exclude: list[StrictStr] = Field(default_factory=list, description="item ids never returned")

    @model_validator(mode="after")
    def _one_user(self):
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id (a known user) or history (a new user)")
        return self


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[RecommendRequest] = Field(..., min_length=1, description="recommend bodies")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: StrictStr | None = Field(None, description="run folder (default: the configured one)")
    model: StrictStr | None = Field(None, description="student folder override")
    index: StrictStr | None = Field(None, description="index folder override")
    allow_new_dataset: StrictBool = Field(
        False, description="accept a run trained on other data (ids change meaning)"
    )


class Item(BaseModel):
    id: str
    score: float
    title: str


class RecommendResponse(BaseModel):
    user_id: str | None
    items: list[Item]
    source: str = Field(description="'model' or 'popularity' (empty history)")
    model_fingerprint: str
    index_fingerprint: str


EXPECTED = {
    "user_id": 'a string user id known to the served run, e.g. "196"',
    "history": "a list of string item ids of the served catalogue",
    "k": "an integer in [1, {max_k}]",
    "exclude_seen": "true or false",
    "exclude": "a list of string item ids",
    "queries": "a non-empty list of recommend bodies (at most {max_batch_queries})",
    "run": "a run folder path (string)",
    "model": "a student folder path (string)",
    "index": "an index folder path (string)",
    "allow_new_dataset": "true or false",
    "body": "a JSON object",
}


class ApiError(Exception):
    """A 4xx answer: ``code``, a message, and per-field details."""

    def __init__(self, status: int, code: str, message: str, detail: list[dict] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail or []

    def response(self) -> JSONResponse:
        body = {"error": self.code, "message": self.message, "detail": self.detail}
        return JSONResponse(body, status_code=self.status)


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part in ("body", "query", "path") and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


# ---------------------------------------------------------------------------- metrics
class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recdistill_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recdistill_request_seconds",
            "request latency (first byte in to last byte out) by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "recdistill_batch_size",
            "queries per user-tower call (micro-batches and /recommend/batch)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=self.registry,
        )
        self.model = Gauge(
            "recdistill_model_info",
            "the loaded run (1 = serving)",
            ["model_fingerprint", "index_fingerprint", "dataset_fingerprint", "index_kind"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "recdistill_reloads", "reload attempts by result", ["result"], registry=self.registry
        )

    def set_model(self, engine: Engine) -> None:
        self.model.clear()
        self.model.labels(
            engine.model_fingerprint,
            engine.index_fingerprint,
            engine.source.dataset_fingerprint,
            engine.index_kind,
        ).set(1)


class _Middleware:
    """Pure ASGI: body size limit (413), in-flight counting for the batcher, metrics."""

    def __init__(self, app, state: _State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.state
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        arriving = scope["path"] == "/recommend" and st.batcher is not None
        if arriving:
            st.batcher.arriving += 1
            scope.setdefault("state", {})["arriving"] = True
        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive)
                if body is None:
                    err = ApiError(
                        413,
                        "body_too_large",
                        f"request body exceeds max_body_bytes={st.config.max_body_bytes}",
                        [
                            {
                                "field": "body",
                                "message": "too large",
                                "expected": f"at most {st.config.max_body_bytes} bytes",
                            }
                        ],
                    )
                    await err.response()(scope, receive, send_wrapper)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            if arriving and scope["state"].pop("arriving", False):
                st.batcher.arriving -= 1
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            st.metrics.requests.labels(endpoint, str(status["code"])).inc()
            st.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _read_body(self, scope, receive) -> bytes | None:
        limit = self.state.config.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    pass
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = {"done": False}

    async def replay():
        if not sent["done"]:
            sent["done"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# ---------------------------------------------------------------------------- state
class _State:
    def __init__(self, config: ServeConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.metrics = Metrics()
        self.metrics.set_model(engine)
        self.executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="compute",
            initializer=_set_threads,
            initargs=(config,),
        )
        self.batcher: MicroBatcher | None = None
        if config.micro_batch:
            self.batcher = MicroBatcher(
                self._run_batch,
                self.executor,
                max_batch=config.max_batch,
                max_wait_ms=config.max_wait_ms,
            )
        self.reload_lock = asyncio.Lock()
        self.reloading = False
        self.started = False

    def _run_batch(self, engine: Engine, queries: list[Query]):
        self.metrics.batch.observe(len(queries))
        return engine.retriever.run(queries)

    def write_state(self) -> None:
        if self.config.out:
            write_json(
                Path(self.config.out) / "serving.json",
                {
                    **self.engine.describe(),
                    "host": self.config.host,
                    "port": self.config.port,
                    "pid": _pid(),
                },
            )


def _pid() -> int:
    import os

    return os.getpid()


def _set_threads(config: ServeConfig) -> None:
    """torch and faiss thread counts, set in the thread that computes (OpenMP settings are
    per thread)."""
    import faiss
    import torch

    torch.set_num_threads(config.torch_threads)
    faiss.omp_set_num_threads(config.faiss_threads)


def load(config: ServeConfig, run=None, model=None, index=None) -> Engine:
    """Resolve and load a run (the config's paths unless given)."""
    if run is None and model is None and index is None:
        run, model, index = config.run, config.model, config.index
    return load_engine(resolve_run(run, model, index), config.index_type, config.batch_independent)


# ---------------------------------------------------------------------------- the factory
def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The application for ``config``; loads the run now (``engine`` reuses a loaded one).

    Raises :class:`ServeError` for a run that cannot be served."""
    _set_threads(config)
    engine = engine if engine is not None else load(config)
    state = _State(config, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.batcher is not None:
            state.batcher.start()
        state.started = True
        sighup = False
        if config.sighup and threading.current_thread() is threading.main_thread():
            try:
                asyncio.get_running_loop().add_signal_handler(
                    signal.SIGHUP, lambda: asyncio.ensure_future(_reload(state, ReloadRequest()))
                )
                sighup = True
            except (NotImplementedError, RuntimeError, ValueError):
                logger.warning("SIGHUP reload unavailable on this platform/thread")
        state.write_state()
        yield
        state.started = False
        if sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if state.batcher is not None:
            await state.batcher.stop()
        state.executor.shutdown(wait=True)

    app = FastAPI(
        title="recdistill",
        summary="two-tower student recommendations over a FAISS index",
        version="1",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.add_middleware(_Middleware, state=state)
    max_k = config.max_k

    def fmt(expected: str) -> str:
        return expected.format(max_k=max_k, max_batch_queries=config.max_batch_queries)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        detail = []
        malformed = False
        for e in exc.errors():
            field = _field(tuple(e.get("loc", ())))
            if e.get("type") == "json_invalid":
                malformed = True
                field = "body"
            name = field.rsplit(".", 1)[-1].split("[")[0]
            item = {"field": field, "message": e.get("msg", "invalid")}
            if "input" in e and e.get("type") != "missing" and not malformed:
                item["got"] = _jsonable(e["input"])
            if e.get("type") == "value_error":  # the model validator: which user
                item["expected"] = "exactly one of user_id (a known user) or history (a new user)"
            else:
                item["expected"] = fmt(EXPECTED.get(name, EXPECTED["body"]))
            detail.append(item)
        if malformed:
            return ApiError(
                400, "malformed_json", "the request body is not valid JSON", detail
            ).response()
        fields = ", ".join(sorted({d["field"] for d in detail}))
        return ApiError(422, "invalid_request", f"invalid field(s): {fields}", detail).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(
            exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
        ).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):  # a bug, not bad input
        logger.exception("unhandled error on %s", request.url.path)
        return ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}").response()

    # ------------------------------------------------------------------ validation -> Query
    def to_query(e: Engine, r: RecommendRequest, where: str = "") -> Query:
        if r.k > max_k:
            raise ApiError(
                422,
                "invalid_request",
                f"{where}k={r.k} exceeds max_k={max_k}",
                [{"field": f"{where}k", "got": r.k, "expected": fmt(EXPECTED["k"])}],
            )
        exclude = _rows(e, r.exclude, f"{where}exclude")
        if r.user_id is not None:
            u = e.user_pos.get(r.user_id)
            if u is None:
                raise ApiError(
                    404,
                    "unknown_user",
                    f"{where}user_id {r.user_id!r} is not a user of the served run; send its "
                    "history instead",
                    [
                        {
                            "field": f"{where}user_id",
                            "got": r.user_id,
                            "expected": EXPECTED["user_id"],
                        }
                    ],
                )
            q = Query(user=u, k=r.k, exclude=exclude, exclude_seen=r.exclude_seen)
        else:
            q = Query(
                history=_rows(e, r.history, f"{where}history"),
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

    def answer(e: Engine, user_id: str | None, res) -> dict:
        return {
            "user_id": user_id,
            "items": _items(e, res.rows, res.scores),
            "source": res.source,
        }

    def fingerprints(e: Engine) -> dict:
        return {"model_fingerprint": e.model_fingerprint, "index_fingerprint": e.index_fingerprint}

    # ------------------------------------------------------------------ endpoints
    @app.post("/recommend", response_model=RecommendResponse, responses=_ERRORS)
    async def recommend(body: RecommendRequest, request: Request):
        """Top-k items for one user (known id or new history)."""
        e = state.engine  # this request finishes on the engine it started with
        try:
            q = to_query(e, body)
        finally:
            _arrived(state, request)
        if state.batcher is not None:
            res = await state.batcher.submit(e, q)
        else:  # naive: each request its own tower call and search
            loop = asyncio.get_running_loop()
            res = (await loop.run_in_executor(state.executor, state._run_batch, e, [q]))[0]
        return JSONResponse({**answer(e, body.user_id, res), **fingerprints(e)})

    @app.post("/recommend/batch", responses=_ERRORS)
    async def recommend_batch(body: BatchRequest):
        """Many users at once: one user-tower call and one batched search."""
        e = state.engine
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
                        "expected": fmt(EXPECTED["queries"]),
                    }
                ],
            )
        qs = [to_query(e, r, f"queries[{i}].") for i, r in enumerate(body.queries)]
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(state.executor, state._run_batch, e, qs)
        return JSONResponse(
            {
                "results": [answer(e, r.user_id, res) for r, res in zip(body.queries, results)],
                **fingerprints(e),
            }
        )

    @app.get("/items/{item_id}/similar", responses=_ERRORS)
    async def similar(item_id: str, k: Annotated[int, QueryParam(ge=1)] = 10):
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
        if k > min(max_k, e.n_items - 1):
            top = min(max_k, e.n_items - 1)
            raise ApiError(
                422,
                "invalid_request",
                f"k={k} is out of range",
                [{"field": "k", "got": k, "expected": f"an integer in [1, {top}]"}],
            )
        loop = asyncio.get_running_loop()
        rows, scores = await loop.run_in_executor(
            state.executor,
            search_excluding,
            e.item_emb[row : row + 1],
            [k],
            [np.array([row], np.int64)],
            e.index,
        )
        return JSONResponse(
            {
                "item": {"id": item_id, "title": e.titles[row], "cold": bool(e.cold[row])},
                "items": _items(e, rows[0], scores[0]),
                **fingerprints(e),
            }
        )

    @app.get("/healthz")
    async def healthz():
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """Readiness: a run is loaded and the batcher runs; what is served."""
        ok = state.started and (state.batcher is None or state.batcher.running)
        body = {"status": "ready" if ok else "starting", "reloading": state.reloading}
        body["queued"] = 0 if state.batcher is None else state.batcher.pending
        body.update(state.engine.describe())
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics():
        """Prometheus text: requests, latency, batch sizes, the loaded model."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", responses=_ERRORS)
    async def reload(request: Request, body: ReloadRequest | None = None):
        """Load a run, check it, swap it in; a bad run is refused and the old one serves on."""
        host = request.client.host if request.client else ""
        if not config.admin_anywhere and host not in LOOPBACK:
            raise ApiError(
                403,
                "forbidden",
                f"/admin/reload is loopback-only (from {host!r}); start with --admin-anywhere",
            )
        return JSONResponse(await _reload(state, body or ReloadRequest()))

    return app


_ERRORS: dict = {
    s: {"description": d}
    for s, d in (
        (400, "malformed JSON"),
        (404, "unknown user or item"),
        (413, "body too large"),
        (422, "invalid field (named in detail)"),
    )
}


async def _reload(state: _State, body: ReloadRequest) -> dict:
    if state.reload_lock.locked():
        raise ApiError(409, "reload_in_progress", "a reload is already running; try again")
    async with state.reload_lock:
        state.reloading = True
        old = state.engine
        try:
            paths = (body.run, body.model, body.index)
            if all(p is None for p in paths):
                paths = (state.config.run, state.config.model, state.config.index)
            new = await asyncio.to_thread(load, state.config, *paths)
            check_replacement(old, new, body.allow_new_dataset)
        except ServeError as exc:
            state.metrics.reloads.labels("refused").inc()
            logger.error("reload refused: %s", exc)
            raise ApiError(
                422,
                "reload_refused",
                f"reload refused, still serving {old.model_fingerprint}: {exc}",
            ) from None
        except Exception as exc:  # an unexpected failure must not take the server down
            state.metrics.reloads.labels("refused").inc()
            logger.exception("reload failed")
            raise ApiError(
                422,
                "reload_refused",
                f"reload failed, still serving {old.model_fingerprint}: {type(exc).__name__}: {exc}",
            ) from None
        finally:
            state.reloading = False
        state.engine = new  # one reference swap; requests hold the engine they started with
        state.metrics.set_model(new)
        state.metrics.reloads.labels("ok").inc()
        state.write_state()
        logger.info("reloaded: %s -> %s", old.model_fingerprint, new.model_fingerprint)
        return {
            "status": "reloaded",
            "old": {
                "model_fingerprint": old.model_fingerprint,
                "index_fingerprint": old.index_fingerprint,
            },
            "new": new.describe(),
        }


def _arrived(state: _State, request: Request) -> None:
    """The request is validated and about to queue: no longer 'arriving' for the batcher."""
    st = request.scope.get("state", {})
    if state.batcher is not None and st.pop("arriving", False):
        state.batcher.arriving -= 1


def _rows(e: Engine, ids: list[str], field: str) -> np.ndarray:
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


def _items(e: Engine, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
    return [
        {"id": str(e.item_ids[r]), "score": float(s), "title": e.titles[r]}
        for r, s in zip(rows.tolist(), scores.tolist())
    ]


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value
