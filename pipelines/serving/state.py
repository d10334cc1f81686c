"""The server's state (engine, compute thread, batcher, metrics, reload lock) and the
``State`` dependency every route takes it by."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
from pipelines.serving.errors import ApiError
from pipelines.serving.schemas import ReloadRequest
from student.serving import Query

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


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


def set_threads(config: ServeConfig) -> None:
    """torch and faiss thread counts, set in the thread that computes (OpenMP settings are
    per thread)."""
    import faiss
    import torch

    torch.set_num_threads(config.torch_threads)
    faiss.omp_set_num_threads(config.faiss_threads)


def load(config: ServeConfig, run=None, model=None, index=None) -> Engine:
    """Resolve and load a run (the config's paths unless given); its known users' vectors are
    computed now (the user tower then runs only for a history given at query time)."""
    if run is None and model is None and index is None:
        run, model, index = config.run, config.model, config.index
    engine = load_engine(
        resolve_run(run, model, index), config.index_type, config.batch_independent
    )
    engine.retriever.precompute_users()
    return engine


def resolve_configured(config: ServeConfig):
    """The configured run's paths (cheap: JSON only), for a one-line error before the port opens."""
    return resolve_run(config.run, config.model, config.index)


class ServingState:
    """What the routes share; ``engine`` is replaced whole on reload."""

    def __init__(self, config: ServeConfig, engine: Engine | None) -> None:
        self.config = config
        self.engine = engine  # None while the first load runs (see load_first)
        self.load_error: str | None = None  # why the first load failed
        self.on_load_failed = None  # called (no arguments) when the first load fails
        self.metrics = Metrics()
        if engine is not None:
            self.metrics.set_model(engine)
        self.executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="compute",
            initializer=set_threads,
            initargs=(config,),
        )
        self.batcher: MicroBatcher | None = None
        if config.micro_batch:
            self.batcher = MicroBatcher(
                self.run_batch,
                self.executor,
                max_batch=config.max_batch,
                max_wait_ms=config.max_wait_ms,
            )
        self.reload_lock = asyncio.Lock()
        self.reloading = False
        self.started = False

    def run_batch(self, engine: Engine, queries: list[Query]):
        """One tower call and search for ``queries`` (on the compute thread)."""
        self.metrics.batch.observe(len(queries))
        return engine.retriever.run(queries)

    async def load_first(self) -> None:
        """Load the configured run on a thread while the port is already open (``/readyz``
        answers 503 "loading" meanwhile, "failed" with the reason if it fails)."""
        try:
            engine = await asyncio.to_thread(load, self.config)
        except Exception as exc:  # noqa: BLE001 (any failure is reported on /readyz)
            self.load_error = str(exc) if isinstance(exc, ServeError) else repr(exc)
            logger.error("load failed: %s", self.load_error)
            if self.on_load_failed is not None:
                self.on_load_failed()
            return
        self.engine = engine
        self.metrics.set_model(engine)
        self.write_state()

    def write_state(self) -> None:
        if self.config.out and self.engine is not None:
            write_json(
                Path(self.config.out) / "serving.json",
                {
                    **self.engine.describe(),
                    "host": self.config.host,
                    "port": self.config.port,
                    "pid": os.getpid(),
                },
            )

    def arrived(self, request: Request) -> None:
        """The request is validated and about to queue: no longer 'arriving' for the batcher."""
        st = request.scope.get("state", {})
        if self.batcher is not None and st.pop("arriving", False):
            self.batcher.arriving -= 1

    async def reload(self, body: ReloadRequest) -> dict:
        """Load a run, check it, swap it in; a bad run is refused (422) and the old serves on."""
        if self.engine is None:
            raise ApiError(503, "loading", "the first load has not finished; nothing to replace")
        if self.reload_lock.locked():
            raise ApiError(409, "reload_in_progress", "a reload is already running; try again")
        async with self.reload_lock:
            old = self.engine
            new = await self._load_checked(body)
            self.engine = new  # one reference swap; requests hold the engine they started with
            self.metrics.set_model(new)
            self.metrics.reloads.labels("ok").inc()
            self.write_state()
            logger.info("reloaded: %s -> %s", old.model_fingerprint, new.model_fingerprint)
            return {
                "status": "reloaded",
                "old": {
                    "model_fingerprint": old.model_fingerprint,
                    "index_fingerprint": old.index_fingerprint,
                },
                "new": new.describe(),
            }

    async def _load_checked(self, body: ReloadRequest) -> Engine:
        self.reloading = True
        old = self.engine
        try:
            paths = (body.run, body.model, body.index)
            if all(p is None for p in paths):
                paths = (self.config.run, self.config.model, self.config.index)
            new = await asyncio.to_thread(load, self.config, *paths)
            check_replacement(old, new, body.allow_new_dataset)
            return new
        except ServeError as exc:
            self.metrics.reloads.labels("refused").inc()
            logger.error("reload refused: %s", exc)
            raise ApiError(
                422,
                "reload_refused",
                f"reload refused, still serving {old.model_fingerprint}: {exc}",
            ) from None
        except Exception as exc:  # an unexpected failure must not take the server down
            self.metrics.reloads.labels("refused").inc()
            logger.exception("reload failed")
            raise ApiError(
                422,
                "reload_refused",
                f"reload failed, still serving {old.model_fingerprint}: {type(exc).__name__}: {exc}",
            ) from None
        finally:
            self.reloading = False


async def get_state(request: Request) -> ServingState:
    """The app's :class:`ServingState` (async: a sync dependency would cost a thread hop)."""
    return request.app.state.serving


State = Annotated[ServingState, Depends(get_state)]
