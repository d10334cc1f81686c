"""The serving app in process (``create_app`` + TestClient): every endpoint, every bad input,
reload with good and bad runs, and answers equal to ``Retriever`` in process."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipelines.serving.app import create_app
from pipelines.serving.artifacts import ServeError, load_engine, resolve_run
from pipelines.serving.config import ServeConfig

LOCAL = ("127.0.0.1", 40000)


@pytest.fixture(scope="module")
def app(run_dir):
    return create_app(ServeConfig(run=str(run_dir), max_batch_queries=50, max_body_bytes=4096))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, client=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def engine(app):
    return app.state.serving.engine


def ids(resp) -> list[str]:
    return [it["id"] for it in resp.json()["items"]]


# ------------------------------------------------------------------ finding and loading a run
def test_resolve_run_finds_the_compressed_student_and_its_data(run_dir):
    src = resolve_run(run_dir)
    assert src.model == run_dir / "compressed" / "int8"
    assert src.dataset.startswith("synthetic:") and src.protocol == "random"
    metrics = json.loads((run_dir / "student_distilled" / "metrics.json").read_text())
    assert src.dataset_fingerprint == metrics["dataset"]["fingerprint"]
    assert src.split_fingerprint == metrics["split"]["fingerprint"]
    assert src.index is None
    plain = resolve_run(run_dir, model=run_dir / "student_distilled" / "model")
    assert plain.dataset_fingerprint == src.dataset_fingerprint


def test_resolve_run_errors_name_the_path(tmp_path, run_dir):
    with pytest.raises(ServeError, match="no such folder"):
        resolve_run(tmp_path / "nope")
    with pytest.raises(ServeError, match="holds no model"):
        resolve_run(tmp_path)
    lone = tmp_path / "lone"
    shutil.copytree(run_dir / "student_distilled" / "model", lone / "m")
    with pytest.raises(ServeError, match="cannot tell which data"):
        resolve_run(None, model=lone / "m")


def _edit_json(path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_load_refuses_data_whose_fingerprint_changed(tmp_path, run_dir):
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    served = run / "compressed" / "int8" / "config.json"  # the model's own provenance
    _edit_json(served, lambda m: m["provenance"]["dataset"].update(fingerprint="0" * 16))
    with pytest.raises(ServeError, match="the data changed"):
        load_engine(resolve_run(run))


def test_a_model_without_provenance_falls_back_to_the_training_metrics(tmp_path, run_dir):
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    _edit_json(run / "compressed" / "int8" / "config.json", lambda m: m.pop("provenance"))
    src = resolve_run(run)
    assert src.provenance[-1] == str(run / "student_distilled" / "metrics.json")
    assert src.dataset_fingerprint == resolve_run(run_dir).dataset_fingerprint
    metrics = run / "student_distilled" / "metrics.json"
    _edit_json(metrics, lambda m: m["dataset"].update(fingerprint="0" * 16))
    with pytest.raises(ServeError, match="the data changed"):
        load_engine(resolve_run(run))


def test_a_compressed_model_is_served_from_its_own_provenance(tmp_path, run_dir):
    run = tmp_path / "r"
    shutil.copytree(run_dir / "compressed", run / "compressed")  # no trained student beside it
    src = resolve_run(run)
    assert src.provenance[-1] == str(run / "compressed" / "int8" / "config.json")
    want = resolve_run(run_dir)
    assert (src.dataset, src.protocol, src.split_seed) == (
        want.dataset,
        want.protocol,
        want.split_seed,
    )
    assert (src.dataset_fingerprint, src.split_fingerprint) == (
        want.dataset_fingerprint,
        want.split_fingerprint,
    )
    _edit_json(run / "compressed" / "compression.json", lambda m: m["config"].update(split_seed=7))
    with pytest.raises(ServeError, match="split_seed=7 but the model's provenance"):
        resolve_run(run)


def test_a_stored_index_is_used_and_a_stale_one_refused(tmp_path, run_dir, engine):
    from student.serving import IndexConfig, ItemIndex

    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    ItemIndex.build(engine.item_emb, engine.item_ids, IndexConfig(kind="sq8")).save(run / "index")
    e = load_engine(resolve_run(run))
    assert e.index_kind == "sq8" and e.source.index == run / "index"
    rng = np.random.default_rng(0)
    stale = rng.normal(size=engine.item_emb.shape).astype(np.float32)
    ItemIndex.build(stale, engine.item_ids).save(run / "index")
    with pytest.raises(ServeError, match="stale"):
        load_engine(resolve_run(run))


# ------------------------------------------------------------------ endpoints
def test_recommend_known_user_equals_in_process_retriever(client, engine):
    for u in (0, 7, 33):
        uid = str(engine.user_ids[u])
        r = client.post("/recommend", json={"user_id": uid, "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == uid and body["source"] == "model"
        assert body["model_fingerprint"] == engine.model_fingerprint
        assert body["index_fingerprint"] == engine.index_fingerprint
        want_ids, want_scores = engine.retriever.retrieve([u], 5, return_scores=True)
        assert ids(r) == list(want_ids[0])
        np.testing.assert_allclose([it["score"] for it in body["items"]], want_scores[0], rtol=1e-5)
        rows = [engine.item_pos[i] for i in ids(r)]
        assert [it["title"] for it in body["items"]] == [engine.titles[j] for j in rows]
        seen = set(engine.retriever.seen[u].indices)
        assert seen and not seen & set(rows)


def test_recommend_exclusions(client, engine):
    uid = str(engine.user_ids[3])
    top = ids(client.post("/recommend", json={"user_id": uid, "k": 4}))
    r = client.post("/recommend", json={"user_id": uid, "k": 4, "exclude": top[:2]})
    assert ids(r)[:2] == top[2:] and not set(top[:2]) & set(ids(r))
    all_ = ids(client.post("/recommend", json={"user_id": uid, "k": 89, "exclude_seen": False}))
    seen = {str(engine.item_ids[j]) for j in engine.retriever.seen[3].indices}
    assert seen <= set(all_)


def test_recommend_new_user_from_history(client, engine):
    hist = [str(engine.item_ids[j]) for j in (5, 17, 42)]
    r = client.post("/recommend", json={"history": hist, "k": 6, "exclude": ["1"]})
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] is None and r.json()["source"] == "model"
    want_ids, want_scores = engine.retriever.retrieve_histories(
        [[5, 17, 42]], 6, exclude=[[engine.item_pos["1"]]], return_scores=True
    )
    assert ids(r) == list(want_ids[0]) and not set(hist + ["1"]) & set(ids(r))
    np.testing.assert_allclose([it["score"] for it in r.json()["items"]], want_scores[0], rtol=1e-5)
    keep = ids(client.post("/recommend", json={"history": hist, "k": 89, "exclude_seen": False}))
    assert set(hist) <= set(keep)


def test_empty_history_gets_popularity(client, engine):
    r = client.post("/recommend", json={"history": [], "k": 5, "exclude": ["2"]})
    assert r.status_code == 200 and r.json()["source"] == "popularity"
    counts = engine.retriever.popularity
    order = [j for j in np.argsort(-counts, kind="stable") if j != engine.item_pos["2"]][:5]
    assert ids(r) == [str(engine.item_ids[j]) for j in order]
    assert [it["score"] for it in r.json()["items"]] == [float(counts[j]) for j in order]
    assert "2" not in ids(r)


def test_batch_equals_single_requests(client, engine):
    queries = [
        {"user_id": str(engine.user_ids[1]), "k": 3},
        {"history": [str(engine.item_ids[9])], "k": 7},
        {"history": []},
        {"user_id": str(engine.user_ids[2]), "k": 2, "exclude_seen": False},
    ]
    r = client.post("/recommend/batch", json={"queries": queries})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 4 and r.json()["model_fingerprint"] == engine.model_fingerprint
    for q, got in zip(queries, res):
        single = client.post("/recommend", json=q).json()
        assert [i["id"] for i in got["items"]] == [i["id"] for i in single["items"]]
        assert got["source"] == single["source"]


def test_similar_items_including_cold_ones(client, engine):
    item = str(engine.item_ids[0])
    r = client.get(f"/items/{item}/similar", params={"k": 4})
    assert r.status_code == 200, r.text
    assert r.json()["item"]["id"] == item and item not in ids(r) and len(ids(r)) == 4
    sims = engine.item_emb @ engine.item_emb[0]
    sims[0] = -np.inf
    assert ids(r) == [str(engine.item_ids[j]) for j in np.argsort(-sims)[:4]]
    cold = np.flatnonzero(engine.cold)
    assert len(cold), "the tiny dataset has items without train interactions"
    rc = client.get(f"/items/{engine.item_ids[cold[0]]}/similar")
    assert rc.status_code == 200 and rc.json()["item"]["cold"] is True and len(ids(rc)) == 10


def test_health_ready_metrics_and_openapi(client, engine):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["model_fingerprint"] == engine.model_fingerprint
    client.post("/recommend", json={"user_id": "no-such-user"})
    text = client.get("/metrics").text
    assert 'recdistill_requests_total{endpoint="/recommend",status="404"}' in text
    assert 'recdistill_request_seconds_bucket{endpoint="/recommend",le="0.005"}' in text
    assert f'model_fingerprint="{engine.model_fingerprint}"' in text
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/recommend", "/recommend/batch", "/items/{item_id}/similar", "/healthz",
              "/readyz", "/metrics", "/admin/reload"):  # fmt: skip
        assert p in paths
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------ bad input: 4xx naming the field
BAD = [
    ({"user_id": "no-such-user"}, 404, "user_id", "no-such-user"),
    ({"history": ["1", "zz9", "yy8"]}, 422, "history", "zz9"),
    ({"user_id": "1", "exclude": ["qq"]}, 422, "exclude", "qq"),
    ({"user_id": "1", "k": 0}, 422, "k", "[1, 1000]"),
    ({"user_id": "1", "k": 1001}, 422, "k", "[1, 1000]"),
    ({"user_id": "1", "k": 2.5}, 422, "k", "integer"),
    ({"user_id": "1", "k": "10"}, 422, "k", "integer"),
    ({"user_id": 196}, 422, "user_id", "string"),
    ({"history": "242"}, 422, "history", "list"),
    ({"history": [242]}, 422, "history[0]", "string"),
    ({"user_id": "1", "exclude_seen": "no"}, 422, "exclude_seen", "true or false"),
    ({"user_id": "1", "history": ["1"]}, 422, "body", "exactly one of"),
    ({}, 422, "body", "exactly one of"),
    ({"user_id": "1", "colour": "blue"}, 422, "colour", ""),
    ([1, 2], 422, "body", "JSON object"),
    ({"history": [str(j) for j in range(1, 85)], "k": 20}, 422, "k", "[1, 6]"),
]


@pytest.mark.parametrize(("body", "status", "field", "expected"), BAD)
def test_bad_recommend_bodies_are_4xx_naming_the_field(client, body, status, field, expected):
    r = client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["error"] and err["message"]
    fields = [d["field"] for d in err["detail"]]
    assert field in fields, err
    text = json.dumps(err)
    assert expected in text


def test_malformed_json_oversized_body_routes_and_methods(client):
    r = client.post(
        "/recommend", content=b'{"user_id": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    assert r.json()["detail"][0]["field"] == "body"
    r = client.post(
        "/recommend",
        content=b"{" + b" " * 5000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and "4096" in r.json()["message"]
    r = client.post("/recommend/batch", json={"queries": [{"user_id": "1"}] * 51})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "queries"
    r = client.post("/recommend/batch", json={"queries": [{"user_id": "1"}, {"user_id": "nobody"}]})
    assert r.status_code == 404 and r.json()["detail"][0]["field"] == "queries[1].user_id"
    r = client.post("/recommend/batch", json={"queries": []})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "queries"
    assert client.get("/items/nothing/similar").status_code == 404
    r = client.get("/items/1/similar", params={"k": "many"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "k"
    assert client.get("/items/1/similar", params={"k": 90}).status_code == 422  # 89 others
    assert client.get("/nowhere").json()["error"] == "not_found"
    assert client.get("/recommend").status_code == 405
    assert client.get("/healthz").status_code == 200  # and the worker is alive


# ------------------------------------------------------------------ reload
def test_reload_good_run_swaps_and_bad_runs_are_refused(
    run_dir, run_dir_b, run_other_data, tmp_path
):
    app = create_app(ServeConfig(run=str(run_dir)))
    with TestClient(app, client=LOCAL) as c:
        uid = "1"
        before = c.post("/recommend", json={"user_id": uid}).json()
        bad_index = tmp_path / "badindex"
        shutil.copytree(run_dir_b, bad_index)
        from student.serving import ItemIndex

        ItemIndex.build(np.eye(90, 8, dtype=np.float32) + 0.1, np.arange(1, 91).astype(str)).save(
            bad_index / "index"
        )
        for body, what in (
            ({"run": str(tmp_path / "missing")}, "no such folder"),
            ({"run": str(run_other_data)}, "ids would change meaning"),
            ({"run": str(bad_index)}, "dimension"),
        ):
            r = c.post("/admin/reload", json=body)
            assert r.status_code == 422 and r.json()["error"] == "reload_refused", r.text
            assert what in r.json()["message"]
            same = c.post("/recommend", json={"user_id": uid}).json()
            assert same == before  # the old run keeps serving
        r = c.post("/admin/reload", json={"run": str(run_dir_b)})
        assert r.status_code == 200, r.text
        after = c.post("/recommend", json={"user_id": uid}).json()
        assert after["model_fingerprint"] == r.json()["new"]["model_fingerprint"]
        assert after["model_fingerprint"] != before["model_fingerprint"]
        assert c.get("/readyz").json()["run"] == str(run_dir_b)
        metrics = c.get("/metrics").text
        assert 'recdistill_reloads_total{result="refused"} 3.0' in metrics
        assert f'model_fingerprint="{after["model_fingerprint"]}"' in metrics
        assert before["model_fingerprint"] not in metrics
        r = c.post("/admin/reload", json={"run": str(run_other_data), "allow_new_dataset": True})
        assert r.status_code == 200 and r.json()["new"]["users"] == 50
    with TestClient(app, client=("10.1.2.3", 5555)) as c:
        r = c.post("/admin/reload")
        assert r.status_code == 403 and "loopback" in r.json()["message"]


def test_in_flight_requests_finish_on_the_old_run(run_dir, run_dir_b):
    app = create_app(ServeConfig(run=str(run_dir)))
    state = app.state.serving
    old = state.engine.model_fingerprint
    with TestClient(app, client=LOCAL) as c:
        gate = threading.Event()
        state.executor.submit(gate.wait, 30)  # the compute thread is busy
        out = {}
        t = threading.Thread(
            target=lambda: out.setdefault("r", c.post("/recommend", json={"user_id": "1"}))
        )
        t.start()
        deadline = time.monotonic() + 30  # wait until it is validated and queued (old engine)
        while state.batcher.pending < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state.batcher.pending == 1
        r = c.post("/admin/reload", json={"run": str(run_dir_b)})  # loads off the compute thread
        assert r.status_code == 200 and r.json()["new"]["model_fingerprint"] != old
        gate.set()
        t.join(30)
        assert out["r"].status_code == 200 and out["r"].json()["model_fingerprint"] == old
        assert c.post("/recommend", json={"user_id": "1"}).json()["model_fingerprint"] != old


# ------------------------------------------------------------------ batching
def test_micro_batcher_joins_queued_requests_and_keeps_their_order():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.serving.batching import MicroBatcher

    sizes = []

    def fn(key, items):
        return [(key, x * 10) for x in items]

    async def main():
        ex = ThreadPoolExecutor(1)
        b = MicroBatcher(fn, ex, max_batch=8, max_wait_ms=0, on_batch=sizes.append)
        b.start()
        gate = threading.Event()
        ex.submit(gate.wait, 10)
        tasks = [asyncio.ensure_future(b.submit("a" if i < 15 else "b", i)) for i in range(20)]
        await asyncio.sleep(0.05)
        gate.set()
        res = await asyncio.gather(*tasks)
        await b.stop()
        return res

    res = asyncio.run(main())
    assert res == [("a" if i < 15 else "b", i * 10) for i in range(20)]
    assert sum(sizes) == 20 and max(sizes) == 8 and len(sizes) < 20  # joined, never > max_batch


def test_naive_mode_answers_the_same(run_dir, client):
    app = create_app(ServeConfig(run=str(run_dir), micro_batch=False))
    with TestClient(app, client=LOCAL) as c:
        for body in ({"user_id": "4", "k": 5}, {"history": ["3", "8"], "k": 5}):
            assert ids(c.post("/recommend", json=body)) == ids(client.post("/recommend", json=body))
