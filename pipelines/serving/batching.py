"""Micro-batching: concurrent requests share one user-tower call and one index search.

Requests are queued on the event loop; one task takes what is queued (up to ``max_batch``)
and runs it on the single compute thread. While that thread is busy, new requests queue up
and form the next batch, so batches grow with load and a lone request never waits for
company. ``max_wait_ms`` only applies while other requests are already being parsed
(``arriving > 0``): then the batch waits at most that long for them.
"""

from __future__ import annotations

import asyncio
import logging
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
        max_wait_ms: float = 1.0,
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
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._futures: set[asyncio.Future] = set()

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for fut in list(self._futures):  # nobody will answer them now
            if not fut.done():
                fut.set_exception(RuntimeError("the server is shutting down"))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def submit(self, key: Any, item: Any) -> Any:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((key, item, fut))
        self.pending += 1
        self._futures.add(fut)
        try:
            return await fut
        finally:
            self.pending -= 1
            self._futures.discard(fut)

    def _drain(self, batch: list) -> None:
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            self._drain(batch)
            if self.max_wait > 0 and len(batch) < self.max_batch and self.arriving > 0:
                deadline = loop.time() + self.max_wait
                while len(batch) < self.max_batch and self.arriving > 0:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), left))
                    except TimeoutError:
                        break
                    self._drain(batch)
            batch = [b for b in batch if not b[2].done()]  # cancelled (client went away)
            groups: dict[int, list] = {}
            for b in batch:
                groups.setdefault(id(b[0]), []).append(b)
            for group in groups.values():
                if self.on_batch is not None:
                    self.on_batch(len(group))
                try:
                    results = await loop.run_in_executor(
                        self.executor, self.fn, group[0][0], [b[1] for b in group]
                    )
                except Exception as exc:  # handed to every waiter; the loop keeps running
                    logger.exception("batch of %d failed", len(group))
                    for _, _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), res in zip(group, results):
                    if not fut.done():
                        fut.set_result(res)
