"""The real server: uvicorn in a subprocess on a free loopback port, queried over HTTP; its
answers equal ``Retriever`` in process; SIGHUP reloads; a bad run is a one-line error."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipelines.serving.artifacts import load_engine, resolve_run

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_server(run: Path, *extra: str):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--run", str(run), "--port", str(port),
         *extra],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not become ready")


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(run_dir):
    proc, url = start_server(run_dir)
    yield url
    stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled


def test_http_answers_equal_in_process_retrieval(server, run_dir):
    e = load_engine(resolve_run(run_dir))
    users = [0, 5, 11, 42]
    histories = [[3, 9, 27], [60], [1, 2, 4, 8, 16, 32, 64, 80, 81, 82, 83, 84]]
    with httpx.Client(base_url=server, timeout=30) as c:
        want_ids, want_scores = e.retriever.retrieve(users, 8, return_scores=True)
        for u, wi, ws in zip(users, want_ids, want_scores):
            r = c.post("/recommend", json={"user_id": str(e.user_ids[u]), "k": 8})
            assert r.status_code == 200, r.text
            assert [it["id"] for it in r.json()["items"]] == list(wi)
            np.testing.assert_allclose([it["score"] for it in r.json()["items"]], ws, rtol=1e-5)
            assert r.json()["model_fingerprint"] == e.model_fingerprint
        want = e.retriever.retrieve_histories(histories, 8)
        for h, wi in zip(histories, want):
            r = c.post("/recommend", json={"history": [str(e.item_ids[j]) for j in h], "k": 8})
            assert [it["id"] for it in r.json()["items"]] == list(wi)
        batch = c.post(
            "/recommend/batch",
            json={"queries": [{"user_id": str(e.user_ids[u]), "k": 8} for u in users]},
        ).json()["results"]
        assert [[it["id"] for it in b["items"]] for b in batch] == want_ids.tolist()


def test_concurrent_requests_are_batched_and_answered_right(server, run_dir):
    e = load_engine(resolve_run(run_dir))
    users = list(range(48))
    want = e.retriever.retrieve(users, 5)

    async def go():
        async with httpx.AsyncClient(base_url=server, timeout=60) as c:
            rs = await asyncio.gather(
                *(c.post("/recommend", json={"user_id": str(e.user_ids[u]), "k": 5}) for u in users)
            )
            return rs, (await c.get("/metrics")).text

    rs, metrics = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    assert [[it["id"] for it in r.json()["items"]] for r in rs] == want.tolist()
    line = next(x for x in metrics.splitlines() if x.startswith("recdistill_batch_size_count"))
    assert float(line.split()[-1]) < 48 + 2  # some requests shared a tower call
    bad = httpx.post(
        f"{server}/recommend", content=b"{", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and httpx.get(f"{server}/healthz").status_code == 200


def test_sighup_reloads_the_run_folder(tmp_path, run_dir, run_dir_b):
    run = tmp_path / "live"
    shutil.copytree(run_dir, run)
    proc, url = start_server(run)
    try:
        before = httpx.get(f"{url}/readyz").json()["model_fingerprint"]
        for part in ("student_distilled", "compressed"):
            shutil.rmtree(run / part)
            shutil.copytree(run_dir_b / part, run / part)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        now = before
        while now == before and time.monotonic() < deadline:
            time.sleep(0.2)
            now = httpx.get(f"{url}/readyz").json()["model_fingerprint"]
        assert now != before
        assert now == load_engine(resolve_run(run)).model_fingerprint
    finally:
        stop(proc)


def test_a_bad_run_is_a_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--run", str(tmp_path / "none")],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2  # bad input, as the CLI documents
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("recdistill serve: error: --run ") and "no such folder" in last
