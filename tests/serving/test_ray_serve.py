"""``recdistill serve --engine ray``: the config, the replica app and the deployment object
without Ray running (fast), and 2 replicas on a local Ray answering as the in-process app
(about 20 s: Ray, its proxy and two replicas start; skipped where ray.serve is not installed)."""

from __future__ import annotations

import importlib.util

import httpx
import pytest
from fastapi.testclient import TestClient

from pipelines.serving.app import create_app
from pipelines.serving.artifacts import ServeError
from pipelines.serving.config import ServeConfig
from pipelines.serving.ray_serve import build_replica_app, fingerprints, replica_config

LOCAL = ("127.0.0.1", 40000)
HAS_SERVE = importlib.util.find_spec("ray") is not None and (
    importlib.util.find_spec("ray.serve") is not None
)
needs_serve = pytest.mark.skipif(
    not HAS_SERVE, reason="ray.serve is not importable: pip install -e '.[ray]' (ray[serve])"
)


def test_config_engine_and_replicas_are_checked():
    assert ServeConfig(engine="ray", replicas=2).replicas == 2
    with pytest.raises(ValueError, match="ServeConfig.engine is 'k8s'"):
        ServeConfig(engine="k8s")
    with pytest.raises(ValueError, match=r"ServeConfig.replicas=0; expected an integer"):
        ServeConfig(engine="ray", replicas=0)
    with pytest.raises(ValueError, match="apply to --engine ray only"):
        ServeConfig(replicas=2)


def test_a_replica_runs_without_sighup_or_serving_json():
    c = replica_config(ServeConfig(engine="ray", replicas=3, out="/tmp/x", port=8123))
    assert (c.engine, c.replicas, c.sighup, c.out, c.port) == ("uvicorn", 1, False, None, 8123)


def test_the_replica_app_answers_as_the_app_and_refuses_admin_reload(run_dir):
    config = ServeConfig(run=str(run_dir))
    plain = create_app(config)
    engine = plain.state.serving.engine
    want = fingerprints(engine)
    app = build_replica_app(replica_config(config), want)
    uid, hist = str(engine.user_ids[7]), [str(i) for i in engine.item_ids[3:5]]
    with TestClient(plain, client=LOCAL) as a, TestClient(app, client=LOCAL) as b:
        for body, status in (
            ({"user_id": uid}, 200),
            ({"history": hist}, 200),
            ({"user_id": "?"}, 404),
        ):
            ra, rb = a.post("/recommend", json=body), b.post("/recommend", json=body)
            assert ra.status_code == status
            assert (ra.status_code, ra.json()) == (rb.status_code, rb.json())
        r = b.post("/admin/reload")
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "reload_is_redeploy" and "SIGHUP" in r.json()["message"]
    with pytest.raises(ServeError, match="the run changed"):
        build_replica_app(config, {**want, "index_fingerprint": "other"})


@needs_serve
def test_the_deployment_has_the_replicas_and_the_replica_config():
    from pipelines.serving.ray_serve import DEPLOYMENT_NAME, bind

    config = ServeConfig(engine="ray", replicas=2, torch_threads=1)
    d = bind(config, {"model_fingerprint": "m"})._bound_deployment
    assert d.name == DEPLOYMENT_NAME and d.num_replicas == 2
    assert d.ray_actor_options["num_cpus"] == 1
    assert d.init_args == (replica_config(config), {"model_fingerprint": "m"})


@needs_serve
def test_two_local_replicas_answer_as_the_in_process_app(run_dir):
    import ray
    from ray import serve

    from pipelines.serving.ray_serve import APP_NAME, DEPLOYMENT_NAME, free_port, start, stop

    plain = create_app(ServeConfig(run=str(run_dir)))
    engine = plain.state.serving.engine
    config = ServeConfig(run=str(run_dir), engine="ray", replicas=2, port=free_port("127.0.0.1"))
    try:
        assert start(config, engine) == config.port
        status = serve.status().applications[APP_NAME]
        assert status.status == "RUNNING"
        assert status.deployments[DEPLOYMENT_NAME].replica_states == {"RUNNING": 2}
        url = f"http://127.0.0.1:{config.port}"
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
        with TestClient(plain, client=LOCAL) as a:
            for body in [{"user_id": str(engine.user_ids[u]), "k": 5} for u in (0, 7, 33)] + [
                {"history": [str(engine.item_ids[3]), str(engine.item_ids[4])], "k": 5}
            ]:
                want = a.post("/recommend", json=body).json()
                got = httpx.post(f"{url}/recommend", json=body, timeout=30)
                assert got.status_code == 200 and got.json() == want
        bad = httpx.post(f"{url}/recommend", json={"user_id": "7", "k": 0}, timeout=30)
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "k"
        assert httpx.post(f"{url}/admin/reload", timeout=30).status_code == 409
    finally:
        stop()
    assert not ray.is_initialized()
