"""Limits that hold under abuse: the items cap of a batch answer, batch answers built off the
event loop, header and idle timeouts, /readyz 503 while the run loads (the port opens
first), and a refused SIGHUP reload logged in one line."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from test_server import free_port, start_server, stop

import pipelines.serving.routes.recommend as recommend_route
import pipelines.serving.state as state_module
from pipelines.serving import serve
from pipelines.serving.app import create_app
from pipelines.serving.artifacts import ServeError
from pipelines.serving.config import ServeConfig

LOCAL = ("127.0.0.1", 40000)


@pytest.fixture(scope="module")
def app(run_dir):
    return create_app(ServeConfig(run=str(run_dir), max_batch_items=50))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, client=LOCAL) as c:
        yield c


def _queries(engine, n, k):
    return [{"user_id": str(u), "k": k} for u in engine.user_ids[:n]]


def test_a_batch_asking_more_items_than_the_cap_is_refused_before_any_work(
    app, client, monkeypatch
):
    e = app.state.serving.engine
    called = []
    monkeypatch.setattr(e.retriever, "run", lambda qs: called.append(qs))
    r = client.post("/recommend/batch", json={"queries": _queries(e, 6, 10)})
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "batch_too_large"
    assert "60 items" in body["message"] and "max_batch_items=50" in body["message"]
    assert not called


def test_the_batch_answer_is_built_off_the_event_loop(app, client, monkeypatch):
    on_loop = []
    real = recommend_route.answer

    def answer(*args):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop runs in this thread: a worker thread
            on_loop.append(False)
        return real(*args)

    monkeypatch.setattr(recommend_route, "answer", answer)
    r = client.post("/recommend/batch", json={"queries": _queries(app.state.serving.engine, 4, 5)})
    assert r.status_code == 200, r.text
    assert on_loop == [False] * 4


# ------------------------------------------------------------------ timeouts (a real server)
@pytest.fixture(scope="module")
def live(app):
    config = ServeConfig(run=None, port=0, header_timeout_s=0.3, idle_timeout_s=0.3)
    server = serve.make_server(app, config, "test")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)
    yield serve.bound_port(server)
    server.should_exit = True
    thread.join(15)


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection (before a generous client-side bound)."""
    sock.settimeout(20)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HT", b"GET /healthz HTTP/1.1\r\nHost: x"])
def test_a_connection_with_unfinished_headers_is_dropped(live, sent):
    with socket.create_connection(("127.0.0.1", live)) as s:
        s.sendall(sent)
        assert _closed_by_server(s)


def test_a_second_request_left_unfinished_is_dropped_too(live):
    with socket.create_connection(("127.0.0.1", live)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(20)
        assert b"200 OK" in s.recv(65536)
        s.sendall(b"GET /heal")
        assert _closed_by_server(s)


def test_an_idle_keep_alive_connection_is_dropped(live):
    with socket.create_connection(("127.0.0.1", live)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _closed_by_server(s)  # after the answer, nothing more: idle


# ------------------------------------------------------------------ loading after the port opens
def _wait_for(get, pred):
    for _ in range(2000):
        r = get()
        if pred(r):
            return r
        time.sleep(0.01)
    raise AssertionError(f"never reached: last answer {r.status_code} {r.text}")


def test_readyz_is_503_loading_until_the_run_is_loaded(run_dir, monkeypatch):
    go, real = threading.Event(), state_module.load
    monkeypatch.setattr(state_module, "load", lambda c: go.wait(60) and real(c))
    with TestClient(create_app(ServeConfig(run=str(run_dir)), background=True)) as c:
        r = c.get("/readyz")
        assert (r.status_code, r.json()) == (503, {"status": "loading"})
        assert c.get("/healthz").status_code == 200
        r = c.post("/recommend", json={"user_id": "0"})
        assert r.status_code == 503 and r.json()["error"] == "not_ready"
        go.set()
        r = _wait_for(lambda: c.get("/readyz"), lambda r: r.status_code == 200)
        assert r.json()["status"] == "ready"
        assert c.post("/recommend", json={"user_id": "0"}).status_code in (200, 404)


def test_a_failed_first_load_is_reported_on_readyz(run_dir, monkeypatch):
    def fail(config):
        raise ServeError("the model folder is broken (test)")

    monkeypatch.setattr(state_module, "load", fail)
    with TestClient(create_app(ServeConfig(run=str(run_dir)), background=True)) as c:
        r = _wait_for(lambda: c.get("/readyz"), lambda r: r.json().get("status") != "loading")
        assert r.status_code == 503
        assert r.json() == {"status": "failed", "error": "the model folder is broken (test)"}
        assert "broken (test)" in c.get("/items/1/similar").json()["message"]


def test_serve_opens_the_port_first_and_exits_with_the_error_if_the_first_load_fails(
    run_dir, monkeypatch
):
    go = threading.Event()

    def fail_later(config):
        go.wait(60)
        raise ServeError("cannot load (test)")

    monkeypatch.setattr(state_module, "load", fail_later)
    port, out = free_port(), {}

    def main():
        try:
            serve.run(ServeConfig(run=str(run_dir), port=port, sighup=False))
        except ServeError as exc:
            out["error"] = str(exc)

    t = threading.Thread(target=main, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}/readyz"

    def get():
        try:
            return httpx.get(url, timeout=5)
        except httpx.ConnectError:
            return httpx.Response(599)

    r = _wait_for(get, lambda r: r.status_code != 599)
    assert (r.status_code, r.json()) == (503, {"status": "loading"})
    go.set()
    t.join(30)
    assert out == {"error": "cannot load (test)"}


# ------------------------------------------------------------------ SIGHUP
def test_a_refused_sighup_reload_logs_one_line_and_no_task_traceback(tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    proc, url = start_server(run)
    try:
        cfg = run / "compressed" / "int8" / "config.json"
        meta = json.loads(cfg.read_text())
        meta["provenance"]["dataset"]["fingerprint"] = "0" * 16
        cfg.write_text(json.dumps(meta))
        proc.send_signal(signal.SIGHUP)
        _wait_for(
            lambda: httpx.get(f"{url}/metrics", timeout=5),
            lambda r: 'recdistill_reloads_total{result="refused"} 1.0' in r.text,
        )
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200  # still serving
    finally:
        stop(proc)
    log = proc.stdout.read()
    assert "Task exception was never retrieved" not in log and "Traceback" not in log
    assert sum("reload refused" in line for line in log.splitlines()) == 1
