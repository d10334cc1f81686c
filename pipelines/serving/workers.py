"""``recdistill serve --workers N``: N server processes on one machine behind one port.

Mechanism (why: README, "Several processes"): the parent process

1. resolves the run (a bad path is the CLI's one-line error, exit 2), then binds and listens
   on the one socket (``--port 0``: the OS picks, the parent logs the port); connections wait
   in its backlog until a worker serves;
2. loads the run once in a short-lived child: a run without a stored index gets its index
   written once into a cache folder, so every worker memory-maps one file
   (``ItemIndex.load(mmap=True)``: the page cache's pages, shared) instead of building a copy;
3. spawns N workers (``multiprocessing`` spawn: no fork of a process holding torch/OpenMP
   threads); each loads the run, then serves the app on the inherited socket (the kernel hands
   each new connection to one worker);
4. forwards signals: SIGHUP -> every worker reloads the configured run (the one-worker reload:
   load, check, swap, requests running finish on the old engine, so nothing is dropped);
   SIGTERM/SIGINT -> every worker stops gracefully; a worker that dies stops the others.

``POST /admin/reload`` reaches the worker that accepted the connection; when it succeeds, that
worker writes ``reload.json`` (generation, its pid, the request body) into the control folder
and sends SIGUSR1 to the parent, which sends SIGUSR1 to the other workers; each reads the file
and reloads with the same body. A worker still loading applies the newest generation once it
serves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from contextlib import asynccontextmanager
from multiprocessing.connection import wait
from pathlib import Path

from common.io import read_json, write_json
from pipelines.serving.config import ServeConfig

logger = logging.getLogger(__name__)

CONTROL_FILE = "reload.json"
SHARED_INDEX = "index"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the CLI's
STOP_SECONDS = 20  # a worker still running this long after SIGTERM is killed

spawn = multiprocessing.get_context("spawn")
multiprocessing.allow_connection_pickling()  # a socket travels to a spawned worker


def prepare(config: ServeConfig, cache: Path) -> str | None:
    """The index folder every worker loads: the run's own (``--index`` or ``<run>/index``), or
    the one built here over the model's items and saved into ``cache``."""
    from pipelines.serving.artifacts import resolve_run
    from pipelines.serving.state import load, set_threads

    source = resolve_run(config.run, config.model, config.index)
    if source.index is not None:
        return str(source.index)
    set_threads(config)  # the item embeddings computed as a worker computes them
    engine = load(config)
    engine.index.save(cache / SHARED_INDEX)
    return str(cache / SHARED_INDEX)


def _prepare_in_child(config: ServeConfig, cache: Path) -> str | None:
    """:func:`prepare` in a spawned process, so the parent never holds a model; its
    ``ServeError`` is raised here (the CLI's one-line error)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(prepare, config, cache).result()


def bind(config: ServeConfig) -> socket.socket:
    """The listening socket all workers accept on."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot bind {config.host}:{config.port}: {exc.strerror}"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(config: ServeConfig, make_server) -> dict:
    """Serve ``config.workers`` processes until SIGTERM/SIGINT; returns what ran.

    ``make_server(app, config, what)``: a ``uvicorn.Server`` (``serve.make_server``, passed in:
    serve imports this module)."""
    from pipelines.serving.artifacts import resolve_run

    resolve_run(config.run, config.model, config.index)  # cheap: a bad path fails here
    sock = bind(config)  # the port opens first: connections wait in its backlog for a worker
    port = int(sock.getsockname()[1])
    control = Path(tempfile.mkdtemp(prefix="recdistill-serve-"))
    try:
        index = _prepare_in_child(config, control)
        config = dataclasses.replace(config, port=port)
        level = logging.getLogger().getEffectiveLevel()
        procs = [
            spawn.Process(
                target=worker_main,
                args=(config, sock, str(control), index, level, make_server),
                name=f"recdistill-worker-{i}",
            )
            for i in range(config.workers)
        ]
        codes = _supervise(procs, config, control)
    finally:
        sock.close()
        shutil.rmtree(control, ignore_errors=True)
    return {"workers": config.workers, "port": port, "exit_codes": codes}


def _supervise(procs: list, config: ServeConfig, control: Path) -> list:
    """Start the workers, forward signals until they stop; their exit codes."""
    stopping, failed = False, ""

    def forward(sig: int, skip: int | None = None) -> None:
        for p in procs:
            if p.pid is not None and p.pid != skip and p.exitcode is None:
                os.kill(p.pid, sig)

    def on_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        forward(signal.SIGTERM)

    def on_hup(signum, frame) -> None:
        logger.info("SIGHUP: every worker reloads %s", config.run)
        forward(signal.SIGHUP)

    def on_announce(signum, frame) -> None:
        try:
            forward(signal.SIGUSR1, skip=int(read_json(control / CONTROL_FILE, "")["pid"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.error("reload announcement unreadable: %s", exc)

    old = {
        s: signal.signal(s, h)
        for s, h in (
            (signal.SIGTERM, on_stop),
            (signal.SIGINT, on_stop),
            (signal.SIGHUP, on_hup if config.sighup else on_stop),
            (signal.SIGUSR1, on_announce),
        )
    }
    try:
        for p in procs:
            p.start()
        logger.info(
            "serving %d workers (pids %s) on http://%s:%d",
            len(procs),
            ", ".join(str(p.pid) for p in procs),
            config.host,
            config.port,
        )
        while any(p.exitcode is None for p in procs):
            wait([p.sentinel for p in procs if p.exitcode is None], timeout=1.0)
            dead = [p for p in procs if p.exitcode is not None]
            if dead and not stopping:
                failed = f"worker {dead[0].pid} exited {dead[0].exitcode} (its log is above)"
                logger.error("%s: stopping the others", failed)
                on_stop(None, None)
        if failed:
            raise ChildProcessError(f"{failed}; stopped the other workers")
        return [p.exitcode for p in procs]
    finally:
        for p in procs:
            p.join(STOP_SECONDS)
            if p.exitcode is None:
                p.kill()
                p.join()
        for s, h in old.items():
            signal.signal(s, h)


def worker_main(
    config: ServeConfig,
    sock: socket.socket,
    control: str,
    index: str | None,
    level: int,
    make_server,
) -> None:
    """One worker: load the run (its index from the shared file), serve on ``sock``."""
    for sig in (signal.SIGHUP, signal.SIGUSR1):  # not fatal while loading; serving replaces it
        signal.signal(sig, signal.SIG_IGN)
    # uvicorn re-raises the SIGTERM it handled once stopped: exit normally (finalizers run)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    parent = os.getppid()
    _stop_with_parent(parent)
    from pipelines.serving.app import create_app
    from pipelines.serving.state import load, set_threads

    set_threads(config)  # as create_app does before it loads
    engine = load(config, config.run, config.model, index) if index else None
    app = create_app(config, engine)
    state = app.state.serving
    app.add_middleware(ReloadAnnouncer, control=Path(control), parent=parent)
    _follow_announcements(app, Path(control))
    make_server(app, config, state.engine.model_fingerprint).run(sockets=[sock])


def _stop_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when the parent dies (even by SIGKILL), so no orphan keeps
    serving the port unsupervised; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _follow_announcements(app, control: Path) -> None:
    """Wrap the app's lifespan: while serving, SIGUSR1 applies the newest ``reload.json``."""
    inner = app.router.lifespan_context
    state = app.state.serving
    applied = {"generation": 0}

    async def apply() -> None:
        try:
            note = read_json(control / CONTROL_FILE, "a reload announcement")
        except (OSError, ValueError):
            return  # none yet
        if note["generation"] <= applied["generation"] or note["pid"] == os.getpid():
            return
        applied["generation"] = note["generation"]
        from pipelines.serving.errors import ApiError
        from pipelines.serving.schemas import ReloadRequest

        while state.reload_lock.locked():  # a SIGHUP reload is running: this one comes after
            await asyncio.sleep(0.05)
        try:
            await state.reload(ReloadRequest(**note["body"]))
        except ApiError as exc:
            logger.error("announced reload %d refused here: %s", note["generation"], exc)
        except Exception as exc:  # a task's exception would be "never retrieved"
            logger.error(
                "announced reload %d failed here: %s: %s",
                note["generation"],
                type(exc).__name__,
                exc,
            )

    @asynccontextmanager
    async def lifespan(a):
        async with inner(a) as value:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(apply()))
            await apply()  # a reload announced while this worker was loading
            yield value
            loop.remove_signal_handler(signal.SIGUSR1)

    app.router.lifespan_context = lifespan


class ReloadAnnouncer:
    """ASGI middleware: after a ``POST /admin/reload`` answered 200, write ``reload.json``
    (generation, pid, the request body) and tell the parent (SIGUSR1)."""

    def __init__(self, app, control: Path, parent: int) -> None:
        self.app = app
        self.control = control
        self.parent = parent

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/admin/reload":
            return await self.app(scope, receive, send)
        body, status = [], []

        async def receive_body():
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def send_status(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive_body, send_status)
        if status == [200]:
            self.announce(b"".join(body))

    def announce(self, raw: bytes) -> None:
        path = self.control / CONTROL_FILE
        try:
            generation = int(read_json(path, "")["generation"]) + 1
        except (OSError, ValueError, KeyError, TypeError):
            generation = 1
        body = json.loads(raw) if raw.strip() else {}
        write_json(path, {"generation": generation, "pid": os.getpid(), "body": body or {}})
        if os.getppid() == self.parent:  # never signal whoever adopted an orphan
            os.kill(self.parent, signal.SIGUSR1)
