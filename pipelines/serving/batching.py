"""Micro-batching: concurrent requests share one user-tower call and one index search.

No task and no timer on the way of a lone request: ``submit`` hands the request to the
compute thread at once when that thread is idle (the same path as the naive server). While
the thread is busy, new requests queue; when it finishes, everything queued (up to
``max_batch``) goes as the next batch, so batches grow with load and form only when requests
are waiting. ``max_wait_ms`` applies only while other requests are being parsed (``arriving``
> 0) and the thread is idle: the batch then waits at most that long for them, and goes as soon
as the last of them has queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

logger = logging.getLogger(__name__)


class MicroBatcher:
    """``await submit(key, item)`` -> ``fn(key, items)[i]``; items of the same ``key`` (the
    engine they were validated against) are run together, so a reload never mixes runs."""

    def __init__(
        self,
        fn: Callable[[Any, list[Any]], list[Any]],
        executor: Executor,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch!r}; expected an integer >= 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={max_wait_ms!r}; expected >= 0")
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1e3
        self.on_batch = on_batch
        self.arriving = 0  # requests being parsed that will submit soon
        self.pending = 0  # submitted, not yet answered
        self._queue: deque = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False  # a batch is on the compute thread
        self._inflight: list = []  # that batch
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self._loop = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, _, fut in [*self._inflight, *self._queue]:  # nobody will answer them now
            if not fut.done():
                fut.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()

    @property
    def running(self) -> bool:
        return self._loop is not None

    async def submit(self, key: Any, item: Any) -> Any:
        if self._loop is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        fut = self._loop.create_future()
        self._queue.append((key, item, fut))
        self.pending += 1
        try:
            if not self._busy:
                self._maybe_dispatch()
            return await fut
        finally:
            self.pending -= 1

    def _maybe_dispatch(self) -> None:
        """Dispatch now, or (others being parsed, room in the batch) within ``max_wait``."""
        if self._timer is not None:
            if self.arriving > 0 and len(self._queue) < self.max_batch:
                return  # the timer, or the last arrival, dispatches
            self._timer.cancel()
            self._timer = None
        elif self.max_wait > 0 and self.arriving > 0 and len(self._queue) < self.max_batch:
            self._timer = self._loop.call_later(self.max_wait, self._on_timer)
            return
        self._dispatch()

    def _on_timer(self) -> None:
        self._timer = None
        if not self._busy:
            self._dispatch()

    def _dispatch(self) -> None:
        """Send the queued requests of the first one's key (at most ``max_batch``) to the
        compute thread; on its return, the next batch goes."""
        while self._queue and self._queue[0][2].done():  # cancelled (client went away)
            self._queue.popleft()
        if not self._queue or self._loop is None:
            return
        key = self._queue[0][0]
        batch, rest = [], deque()
        while self._queue and len(batch) < self.max_batch:
            b = self._queue.popleft()
            if b[2].done():
                continue
            (batch if b[0] is key else rest).append(b)
        rest.extend(self._queue)
        self._queue = rest
        if self.on_batch is not None:
            self.on_batch(len(batch))
        self._busy, self._inflight = True, batch
        done = asyncio.wrap_future(self.executor.submit(self.fn, key, [b[1] for b in batch]))
        done.add_done_callback(lambda f: self._finish(batch, f))

    def _finish(self, batch: list, f: asyncio.Future) -> None:
        self._busy, self._inflight = False, []
        exc = f.exception() if not f.cancelled() else RuntimeError("the batch was cancelled")
        if exc is not None:  # handed to every waiter; the batcher keeps running
            logger.error("batch of %d failed", len(batch), exc_info=exc)
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, _, fut), res in zip(batch, f.result()):
                if not fut.done():
                    fut.set_result(res)
        if self._queue:
            self._dispatch()
