"""The hot path: known users' vectors computed once at load (answers unchanged), seen-item
filtering from the stored rows, uvloop + httptools, orjson answers equal to the JSON ones."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipelines.serving.app import create_app
from pipelines.serving.artifacts import load_engine, resolve_run
from pipelines.serving.batching import MicroBatcher
from pipelines.serving.config import ServeConfig
from student.serving import Query

LOCAL = ("127.0.0.1", 40000)


@pytest.mark.parametrize("which", ["int8", "float"])
def test_precomputed_users_answer_exactly_as_the_tower_did(run_dir, which):
    model = None if which == "int8" else str(run_dir / "student_distilled" / "model")
    e = load_engine(resolve_run(run_dir, model))
    r = e.retriever
    queries = [Query(user=u, k=7) for u in range(r.n_users)]
    queries += [Query(user=3, k=5, exclude=[0, 1, 2]), Query(user=4, k=80, exclude_seen=False)]
    before = [r.run([q])[0] for q in queries]  # encode + search, one user at a time
    vecs = r.precompute_users()
    assert vecs.shape[0] == r.n_users
    r.model.encode_users = None  # the tower must not run for a known user any more
    for got in (r.run(queries), [r.run([q])[0] for q in queries]):
        for a, b in zip(before, got):
            np.testing.assert_array_equal(a.rows, b.rows)
            np.testing.assert_array_equal(a.scores, b.scores)


def test_seen_rows_are_sliced_not_rebuilt(run_dir):
    r = load_engine(resolve_run(run_dir)).retriever
    for u in range(r.n_users):
        want = np.unique(r.seen[u].indices)
        got = r.excluded_rows(Query(user=u))
        np.testing.assert_array_equal(got, want)
        assert got.base is not None  # a view of the stored rows, no copy per request
        np.testing.assert_array_equal(
            r.excluded_rows(Query(user=u, exclude=[5, 5, 0])), np.union1d(want, [0, 5])
        )


def test_served_engine_has_user_vectors_after_load_and_reload(run_dir, run_dir_b):
    app = create_app(ServeConfig(run=str(run_dir)))
    with TestClient(app, client=LOCAL) as c:
        assert app.state.serving.engine.retriever.user_vectors is not None
        assert c.post("/admin/reload", json={"run": str(run_dir_b)}).status_code == 200
        assert app.state.serving.engine.retriever.user_vectors is not None


def test_server_runs_on_uvloop_and_httptools(run_dir):
    pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from pipelines.serving.serve import make_server

    server = make_server(object(), ServeConfig(run=str(run_dir), port=0), "x")
    # httptools under the header timeout (pipelines.serving.limits)
    assert server.config.loop == "uvloop" and issubclass(server.config.http, HttpToolsProtocol)


def test_orjson_answers_are_the_json_answers(run_dir):
    app = create_app(ServeConfig(run=str(run_dir)))
    with TestClient(app, client=LOCAL) as c:
        for path, body in (
            ("/recommend", {"user_id": "1", "k": 20}),
            ("/recommend", {"history": ["3", "4"], "k": 5}),
            ("/recommend/batch", {"queries": [{"user_id": "2"}, {"history": []}]}),
        ):
            r = c.post(path, json=body)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            want = json.dumps(r.json(), ensure_ascii=False, separators=(",", ":"))
            assert r.content == want.encode()


def test_a_batch_fetches_each_query_as_deep_as_it_needs():
    from student.serving import ItemIndex
    from student.serving.retrieve import search_excluding

    rng = np.random.default_rng(0)
    index = ItemIndex.build(rng.normal(size=(300, 8)).astype(np.float32), np.arange(300))
    asked = []
    search = index.search
    index.search = lambda q, k: asked.append((len(q), k)) or search(q, k)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    seen = [np.arange(2), np.arange(100), np.arange(3)]
    rows, scores = search_excluding(q, [5, 5, 5], seen, index)
    assert sorted(asked) == [(1, 128), (2, 8)]  # not all three as deep as the heaviest
    for i in range(3):
        want_s, want_r = search(q[i : i + 1], 300)
        keep = ~np.isin(want_r[0], seen[i])
        np.testing.assert_array_equal(rows[i], want_r[0][keep][:5])
        np.testing.assert_allclose(scores[i], want_s[0][keep][:5], rtol=1e-6)


class _Recording(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(1)
        self.sizes: list[int] = []

    def submit(self, fn, *args, **kwargs):
        self.sizes.append(len(args[1]))
        return super().submit(fn, *args, **kwargs)


def _fn(key, items):
    return [x * 10 for x in items]


def test_a_lone_request_goes_to_the_compute_thread_without_a_loop_turn():
    async def main():
        ex = _Recording()
        b = MicroBatcher(_fn, ex, max_wait_ms=500)
        b.start()
        t = asyncio.ensure_future(b.submit("a", 1))
        await asyncio.sleep(0)  # the submit ran up to its await
        assert ex.sizes == [1]
        assert await t == 10
        await b.stop()

    asyncio.run(main())


def test_a_wait_for_requests_being_parsed_ends_with_the_last_of_them():
    async def main():
        ex = _Recording()
        b = MicroBatcher(_fn, ex, max_wait_ms=10_000)
        b.start()
        b.arriving = 2  # two more are being parsed
        t0 = time.monotonic()
        first = asyncio.ensure_future(b.submit("a", 1))
        await asyncio.sleep(0.01)
        assert ex.sizes == []  # waits for them (at most max_wait)
        b.arriving = 0
        got = await asyncio.gather(first, b.submit("a", 2))
        assert got == [10, 20] and ex.sizes == [2] and time.monotonic() - t0 < 5
        await b.stop()

    asyncio.run(main())


def test_by_default_an_idle_compute_thread_never_waits_for_company():
    config = ServeConfig(run="unused")

    async def main():
        ex = _Recording()
        b = MicroBatcher(_fn, ex, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms)
        b.start()
        b.arriving = 5  # others are being parsed: still no wait
        t = asyncio.ensure_future(b.submit("a", 1))
        await asyncio.sleep(0)
        assert ex.sizes == [1]
        assert await t == 10
        await b.stop()

    asyncio.run(main())
