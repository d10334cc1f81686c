"""``recdistill serve --engine ray``: the config, the replica app and the deployment object
without Ray running (fast), and 2 replicas on a local Ray answering as the in-process app
(about 20 s: Ray, its proxy and two replicas start; skipped where ray.serve is not installed)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from pipelines.serving.app import create_app
from pipelines.serving.artifacts import ServeError
from pipelines.serving.config import ServeConfig
from pipelines.serving.ray_serve import build_replica_app, fingerprints, replica_config

LOCAL = ("127.0.0.1", 40000)
try:  # ray[data] without the serve extra has ray.serve but not its dependencies (grpc)
    import ray.serve  # noqa: F401

    HAS_SERVE = True
except ImportError:
    HAS_SERVE = False
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


def test_engine_ray_without_ray_serve_is_one_error_naming_the_install(monkeypatch, run_dir):
    from pipelines.serving.ray_serve import run

    monkeypatch.setitem(sys.modules, "ray.serve", None)  # import ray.serve raises ImportError
    with pytest.raises(ServeError, match=r"pip install 'recdistill\[ray\]'"):
        run(ServeConfig(run=str(run_dir), engine="ray"))


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


def test_a_redeploy_to_a_run_of_other_data_is_refused_before_ray_is_touched(
    run_dir, run_other_data
):
    from pipelines.serving.ray_serve import redeploy

    current = create_app(ServeConfig(run=str(run_dir))).state.serving.engine
    with pytest.raises(ServeError, match="dataset"):
        redeploy(ServeConfig(run=str(run_other_data), engine="ray"), current)


@needs_serve
@pytest.mark.slow
def test_the_cli_redeploys_on_sighup_without_a_failed_request(tmp_path, run_dir, run_dir_b):
    """``recdistill serve --engine ray --replicas 2``: SIGHUP after the run folder changed rolls
    both replicas onto it while every request is answered; SIGTERM exits 0, no traceback."""
    from tests.serving.test_server import ROOT, _env, free_port

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    port, log = free_port(), tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--run", str(run), "--engine", "ray",
           "--replicas", "2", "--port", str(port)]  # fmt: skip
    with open(log, "w") as out:  # a file, not a pipe: Ray logs every request
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    url, body = f"http://127.0.0.1:{port}", {"history": [], "k": 3}
    try:
        before = _wait_ready(proc, url, log)
        for part in ("student_distilled", "compressed"):
            shutil.rmtree(run / part)
            shutil.copytree(run_dir_b / part, run / part)
        proc.send_signal(signal.SIGHUP)
        now, n, deadline = before, 0, time.monotonic() + 180
        while now == before and time.monotonic() < deadline:
            r = httpx.post(f"{url}/recommend", json=body, timeout=30)
            assert r.status_code == 200, r.text  # no request fails while the replicas roll
            now, n = r.json()["model_fingerprint"], n + 1
        assert now != before and n > 1, log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]
    assert "redeployed:" in text


def _wait_ready(proc, url: str, log) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return r.json()["model_fingerprint"]
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("server did not become ready")
