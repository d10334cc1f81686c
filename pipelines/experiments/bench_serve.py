"""`recdistill bench-serve`: load test of `recdistill serve` over loopback.

Starts each server in a subprocess on a free loopback port, one at a time: the real server
(micro-batching), the same server with ``--no-micro-batch`` (naive: each request its own
tower call and search) and an empty endpoint of the same framework
(:mod:`pipelines.serving.peers`, a fixed list). Drives each with ``httpx.AsyncClient`` at each
concurrency, for single (``/recommend``) and batch (``/recommend/batch``) requests, with a
bounded request count and time per level; records requests/s, p50/p90/p99/max latency and
errors. Also times the same queries in process (``Retriever.run``, batch 1 and batch size),
so HTTP's share is a ratio, and reloads the run under load (concurrency 32) counting the
requests that failed. The client and the server run on the same machine and share its CPUs:
the numbers are for that, not for a client on another host. Writes ``bench_serve.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import to_dict
from common.io import write_json
from pipelines.serving.stack import stack
from student.serving.config import IndexKind

logger = logging.getLogger(__name__)

PEERS = ("served", "naive", "empty")


@dataclass
class BenchServeConfig:
    run: str = field(default="runs/demo", metadata={"help": "a finished run folder to serve"})
    model: str | None = field(default=None, metadata={"help": "student folder override"})
    index_type: IndexKind = field(default="flat", metadata={"help": "index kind the server builds"})
    concurrency: tuple[int, ...] = field(
        default=(1, 8, 32, 128), metadata={"help": "concurrent client requests per level"}
    )
    requests: int = field(default=2000, metadata={"help": "most requests per level"})
    seconds: float = field(default=8.0, metadata={"help": "most seconds per level"})
    warmup: int = field(default=50, metadata={"help": "untimed requests before each level"})
    batch_size: int = field(default=32, metadata={"help": "users per /recommend/batch request"})
    k: int = field(default=10, metadata={"help": "items per user"})
    max_wait_ms: float = field(default=0.0, metadata={"help": "the server's micro-batch wait"})
    reload_seconds: float = field(
        default=6.0, metadata={"help": "length of the reload-under-load run (0 = skip)"}
    )
    n_inprocess: int = field(default=500, metadata={"help": "queries timed in process"})
    serve_flags: str = field(
        default="",
        metadata={
            "help": "extra flags for the `recdistill serve` of the served and naive peers, "
            'e.g. "--workers 2" (recorded in bench_serve.json)'
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the user sample"})
    out: str = field(default="runs/bench_serve", metadata={"help": "output folder"})

    def __post_init__(self):
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise ValueError(
                f"BenchServeConfig.concurrency={self.concurrency!r}; expected ints >= 1"
            )
        for name in ("requests", "batch_size", "k", "n_inprocess"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchServeConfig.{name}={getattr(self, name)!r}; expected >= 1")
        try:
            shlex.split(self.serve_flags)
        except ValueError as exc:
            raise ValueError(
                f"BenchServeConfig.serve_flags={self.serve_flags!r}: {exc}; expected flags of "
                '`recdistill serve`, e.g. "--workers 2"'
            ) from None
        if self.seconds <= 0 or self.reload_seconds < 0 or self.warmup < 0:
            raise ValueError(
                "BenchServeConfig: seconds must be > 0, reload_seconds and warmup >= 0"
            )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(kind: str, c: BenchServeConfig, port: int) -> list[str]:
    """The command line of peer ``kind`` (one of PEERS) on ``port``."""
    if kind == "empty":
        cmd = [sys.executable, "-m", "uvicorn", "pipelines.serving.peers:create_empty_app",
               "--factory", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
               "--log-level", "warning", "--loop", stack()["loop"],
               "--http", stack()["http"]]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--run", c.run, "--port",
               str(port), "--index-type", c.index_type, "--max-wait-ms", str(c.max_wait_ms)]  # fmt: skip
        if c.model:
            cmd += ["--model", c.model]
        if kind == "naive":
            cmd.append("--no-micro-batch")
        cmd += shlex.split(c.serve_flags)
    return cmd


def _start(kind: str, c: BenchServeConfig) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = command(kind, c, port)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{kind} server exited {proc.returncode}: {proc.stderr.read()[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{kind} server on {url} not ready after 300 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _stats(lat: list[float], errors: int, elapsed: float) -> dict:
    a = np.asarray(lat) * 1e3
    pct = (lambda q: float(np.percentile(a, q))) if len(a) else (lambda q: None)
    return {
        "requests": len(lat) + errors,
        "ok": len(lat),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(lat) / elapsed if elapsed > 0 else None,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": float(a.max()) if len(a) else None,
    }


async def drive(
    url: str,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    warmup: int = 0,
    during=None,
) -> dict:
    """``concurrency`` workers post ``bodies`` (cycled) until ``max_requests`` or
    ``max_seconds``; a non-200 answer or a transport error counts as an error. ``during``: an
    async callable started with the load (e.g. a reload); its result is returned too."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        for i in range(warmup):
            await client.post(path, content=bodies[i % len(bodies)], headers=headers)
        lat: list[float] = []
        state = {"next": 0, "errors": 0, "statuses": {}}
        t_end = time.perf_counter() + max_seconds

        async def worker():
            while state["next"] < max_requests and time.perf_counter() < t_end:
                n = state["next"]
                state["next"] += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, content=bodies[n % len(bodies)], headers=headers)
                    ok = r.status_code == 200
                    if not ok:
                        state["statuses"][r.status_code] = (
                            state["statuses"].get(r.status_code, 0) + 1
                        )
                except httpx.HTTPError as exc:
                    ok = False
                    key = type(exc).__name__
                    state["statuses"][key] = state["statuses"].get(key, 0) + 1
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    state["errors"] += 1

        t0 = time.perf_counter()
        side = asyncio.ensure_future(during(client)) if during else None
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        extra = await side if side else None
    out = _stats(lat, state["errors"], elapsed)
    if state["statuses"]:
        out["error_kinds"] = {str(k): v for k, v in state["statuses"].items()}
    if extra is not None:
        out["during"] = extra
    return out


def inprocess(engine, users: np.ndarray, c: BenchServeConfig) -> dict:
    """The same queries through ``Retriever.run`` in this process (1 torch / faiss thread)."""
    import faiss
    import torch

    from student.serving import Query

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    r = engine.retriever
    single = []
    for u in users[: c.n_inprocess]:
        t0 = time.perf_counter()
        r.run([Query(user=int(u), k=c.k)])
        single.append(time.perf_counter() - t0)
    batch = []
    for s in range(0, min(len(users), c.n_inprocess), c.batch_size):
        qs = [Query(user=int(u), k=c.k) for u in users[s : s + c.batch_size]]
        if len(qs) < c.batch_size:
            break
        t0 = time.perf_counter()
        r.run(qs)
        batch.append(time.perf_counter() - t0)
    return {
        "single": _stats(single, 0, sum(single)),
        "batch": _stats(batch, 0, sum(batch)) if batch else None,
    }


def run(config: BenchServeConfig) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one log line per request
    c = config
    t_start = time.perf_counter()
    rng = np.random.default_rng(c.seed)
    from pipelines.serving.artifacts import load_engine, resolve_run

    engine = load_engine(resolve_run(c.run, c.model), c.index_type)
    logger.info("bench-serve on %s (%s)", engine.source.model, engine.source.dataset)
    user_ids = engine.user_ids
    users = rng.integers(0, len(user_ids), size=max(c.requests, c.n_inprocess))
    local = inprocess(engine, users, c)
    singles = [json.dumps({"user_id": str(user_ids[u]), "k": c.k}).encode() for u in users]
    batches = [
        json.dumps(
            {
                "queries": [
                    {"user_id": str(user_ids[u]), "k": c.k} for u in users[s : s + c.batch_size]
                ]
            }
        ).encode()
        for s in range(0, len(users) - c.batch_size + 1, c.batch_size)
    ]
    results: dict = {kind: {"single": {}, "batch": {}} for kind in PEERS}
    reload_result = None
    for kind in PEERS:
        proc, url = _start(kind, c)
        try:
            for conc in c.concurrency:
                for mode, bodies, path in (
                    ("single", singles, "/recommend"),
                    ("batch", batches, "/recommend/batch"),
                ):
                    res = asyncio.run(
                        drive(url, path, bodies, conc, c.requests, c.seconds, warmup=c.warmup)
                    )
                    results[kind][mode][str(conc)] = res
                    logger.info(
                        "%s %s c=%d: %.0f req/s p50 %.2f ms p99 %.2f ms errors %d",
                        kind, mode, conc, res["rps"] or 0, res["p50_ms"] or -1,
                        res["p99_ms"] or -1, res["errors"],
                    )  # fmt: skip
            if kind == "served" and c.reload_seconds > 0:
                reload_result = asyncio.run(_reload_under_load(url, singles, c))
        finally:
            _stop(proc)
    result = {
        "config": to_dict(c),
        "run": engine.describe(),
        "machine": {
            "cpus": os.cpu_count(),
            "note": "client (this process) and server (a subprocess) share the machine's CPUs",
        },
        "stack": stack(),
        "inprocess": {k: local[k] for k in ("single", "batch")},
        "http": results,
        "reload_under_load": reload_result,
        "targets": targets(results, local, reload_result),
        "seconds": time.perf_counter() - t_start,
    }
    write_json(Path(c.out) / "bench_serve.json", result)
    return result


async def _reload_under_load(url: str, bodies: list[bytes], c: BenchServeConfig) -> dict:
    async def reload(client):
        await asyncio.sleep(c.reload_seconds / 3)
        t0 = time.perf_counter()
        r = await client.post("/admin/reload", timeout=300)
        return {"status": r.status_code, "seconds": time.perf_counter() - t0}

    res = await drive(url, "/recommend", bodies, 32, 10**9, c.reload_seconds, during=reload)
    return res


def targets(results: dict, local: dict, reload_result: dict | None) -> dict:
    """The serving targets (issue 28: served >= 2x naive and >= 80% of the empty endpoint at
    concurrency 32, p99 <= 3 ms at concurrency 1, no error, a reload drops nothing), each with
    the measured value and whether it was met."""
    out = {}
    s32 = results["served"]["single"].get("32")
    if s32:
        n32, e32 = results["naive"]["single"]["32"], results["empty"]["single"]["32"]
        out["c32_vs_naive"] = {
            "target": ">= 2x",
            "value": s32["rps"] / n32["rps"],
            "met": s32["rps"] >= 2 * n32["rps"],
        }
        out["c32_vs_empty"] = {
            "target": ">= 0.8",
            "value": s32["rps"] / e32["rps"],
            "met": s32["rps"] >= 0.8 * e32["rps"],
        }
    errors = sum(
        r["errors"] for kind in results.values() for m in kind.values() for r in m.values()
    )
    out["errors"] = {"target": 0, "value": errors, "met": errors == 0}
    s1 = results["served"]["single"].get("1")
    if s1:
        out["c1_p99_ms"] = {"target": "<= 3", "value": s1["p99_ms"], "met": s1["p99_ms"] <= 3}
        add = s1["p50_ms"] - local["single"]["p50_ms"]
        out["c1_http_adds_p50_ms"] = {
            "target": "<= 1",
            "value": add,
            "ratio": s1["p50_ms"] / local["single"]["p50_ms"],
            "met": add <= 1,
        }
    if reload_result is not None:
        ok = reload_result["errors"] == 0 and reload_result["during"]["status"] == 200
        out["reload_drops_none"] = {
            "target": 0,
            "value": reload_result["errors"],
            "reload_status": reload_result["during"]["status"],
            "met": ok,
        }
    return out


def table(result: dict) -> str:
    """Markdown: req/s and latency per peer, mode and concurrency."""
    lines = [
        "| server | request | concurrency | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, modes in result["http"].items():
        for mode, levels in modes.items():
            for conc, r in levels.items():
                lines.append(
                    f"| {kind} | {mode} | {conc} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                    f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['errors']} |"
                )
    ip = result["inprocess"]
    lines.append(
        f"\nin process (Retriever.run): batch 1 p50 {ip['single']['p50_ms']:.3f} ms, "
        f"p99 {ip['single']['p99_ms']:.3f} ms"
        + (
            f"; batch {result['config']['batch_size']} p50 {ip['batch']['p50_ms']:.3f} ms"
            if ip["batch"]
            else ""
        )
    )
    return "\n".join(lines)


def format_summary(result: dict) -> str:
    lines = [table(result), ""]
    for name, t in result["targets"].items():
        v = t["value"]
        v = f"{v:.3f}" if isinstance(v, float) else v
        lines.append(f"{name}: {v} (target {t['target']}) {'met' if t['met'] else 'NOT met'}")
    lines.append(result["machine"]["note"] + f" ({result['machine']['cpus']} CPUs)")
    lines.append(f"written: {Path(result['config']['out']) / 'bench_serve.json'}")
    return "\n".join(lines)
