"""``recdistill serve --workers 2``: one port, two processes, both answer, a reload (HTTP on
any worker, or SIGHUP to the parent) reaches both, SIGTERM stops all; the index file is
memory-mapped (shared) for every index kind."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipelines.serving.artifacts import load_engine, resolve_run
from pipelines.serving.config import ServeConfig
from student.serving import IndexConfig, ItemIndex
from student.serving.config import INDEX_KINDS
from tests.serving.test_server import ROOT, _env

LINE = re.compile(r"serving 2 workers \(pids (\d+), (\d+)\) on (http://[\d.]+:\d+)")


@pytest.mark.parametrize("kind", [*INDEX_KINDS, "refine"])
def test_mmap_load_maps_the_file_and_answers_as_a_copy(tmp_path, kind):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((400, 8)).astype(np.float32)
    if kind == "refine":
        config = IndexConfig(kind="ivf_sq8", nlist=4, refine=True)
    else:
        config = IndexConfig(kind=kind, nlist=4 if kind.startswith("ivf") else None)
    ItemIndex.build(emb, np.arange(400), config).save(tmp_path / "ix")
    copy = ItemIndex.load(tmp_path / "ix")
    mapped = ItemIndex.load(tmp_path / "ix", mmap=True)
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the file is mapped shared and read-only ("r--s")
        lines = [x for x in maps.read_text().splitlines() if str(tmp_path / "ix") in x]
        assert lines and all(x.split()[1] == "r--s" for x in lines)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    for a, b in zip(copy.search(q, 7), mapped.search(q, 7)):
        np.testing.assert_array_equal(a, b)


def test_workers_must_be_at_least_one():
    with pytest.raises(ValueError, match=r"ServeConfig.workers=0"):
        ServeConfig(workers=0)


def test_a_bad_run_with_workers_is_a_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--run", str(tmp_path / "none"),
         "--workers", "2"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("recdistill serve: error: --run ")


def _start(run: Path, log: Path):
    """``serve --workers 2 --port 0``; (process, url, the two worker pids) from its log."""
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--run", str(run), "--port", "0",
         "--workers", "2"],
        cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text()}")
        found = LINE.search(log.read_text())
        if found:
            return proc, found[3], {int(found[1]), int(found[2])}
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no 'serving 2 workers' line: {log.read_text()}")


def _readyz_by_pid(url: str, pids: set[int], until, seconds: float = 120) -> dict:
    """GET /readyz on fresh connections (each one goes to whichever worker accepts it) until
    ``until(answers)``; answers: pid -> the last /readyz body from that worker."""
    answers: dict[int, dict] = {}

    async def one(c: httpx.AsyncClient) -> None:
        try:
            r = await c.get(f"{url}/readyz", headers={"connection": "close"})
        except httpx.HTTPError:
            return  # not listening yet
        if r.status_code == 200:
            answers[r.json()["pid"]] = r.json()

    async def rounds() -> None:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=30) as c:
            while not until(answers) and time.monotonic() < deadline:
                await asyncio.gather(*(one(c) for _ in range(16)))
                await asyncio.sleep(0.1)

    asyncio.run(rounds())
    assert set(answers) <= pids, (answers.keys(), pids)
    return answers


def test_two_workers_answer_reload_together_and_stop(tmp_path, run_dir, run_dir_b):
    live = tmp_path / "live"
    shutil.copytree(run_dir, live)
    fp_a = load_engine(resolve_run(live)).model_fingerprint
    e_b = load_engine(resolve_run(run_dir_b))
    proc, url, pids = _start(live, tmp_path / "serve.log")
    try:
        ready = _readyz_by_pid(url, pids, lambda a: len(a) == 2)
        assert set(ready) == pids and {a["model_fingerprint"] for a in ready.values()} == {fp_a}

        async def reload_under_load():  # one worker reloads by HTTP while requests run
            body = {"user_id": str(e_b.user_ids[3]), "k": 5}
            async with httpx.AsyncClient(base_url=url, timeout=60) as c:
                load = [c.post("/recommend", json=body) for _ in range(40)]
                reload = c.post("/admin/reload", json={"run": str(run_dir_b)})
                return await asyncio.gather(reload, *load)

        reload, *answers = asyncio.run(reload_under_load())
        assert reload.status_code == 200, reload.text
        assert all(r.status_code == 200 for r in answers)
        fp_b = e_b.model_fingerprint
        both_b = _readyz_by_pid(
            url,
            pids,
            lambda a: len(a) == 2 and all(x["model_fingerprint"] == fp_b for x in a.values()),
        )
        assert {a["model_fingerprint"] for a in both_b.values()} == {fp_b}, both_b
        r = httpx.post(f"{url}/recommend", json={"user_id": str(e_b.user_ids[3]), "k": 5})
        want = e_b.retriever.retrieve([3], 5)[0]
        assert [it["id"] for it in r.json()["items"]] == list(want)

        proc.send_signal(signal.SIGHUP)  # the parent: every worker reloads the run it was given
        both_a = _readyz_by_pid(
            url,
            pids,
            lambda a: len(a) == 2 and all(x["model_fingerprint"] == fp_a for x in a.values()),
        )
        assert {a["model_fingerprint"] for a in both_a.values()} == {fp_a}, both_a
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    log = (tmp_path / "serve.log").read_text()
    assert proc.returncode == 0, log
    assert "Traceback" not in log and "leaked" not in log, log
    for pid in pids:  # the workers are gone too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_that_dies_stops_the_others(tmp_path, run_dir):
    proc, url, pids = _start(run_dir, tmp_path / "serve.log")
    try:
        _readyz_by_pid(url, pids, lambda a: len(a) >= 1)
        victim, other = sorted(pids)
        os.kill(victim, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = (tmp_path / "serve.log").read_text().strip().splitlines()[-1]
    assert proc.returncode == 3, last  # the environment killed it (OOM, kill -9): exit 3
    assert last.startswith(f"recdistill serve: error: worker {victim} exited -9"), last
    with pytest.raises(ProcessLookupError):
        os.kill(other, 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_stop_when_the_parent_is_killed(tmp_path, run_dir):
    proc, url, pids = _start(run_dir, tmp_path / "serve.log")
    try:
        _readyz_by_pid(url, pids, lambda a: len(a) >= 1)
    finally:
        proc.kill()  # SIGKILL: the parent forwards nothing
        proc.wait(30)
    deadline = time.monotonic() + 60
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive.discard(pid)
        time.sleep(0.2)
    assert not alive, f"orphan workers {alive} still running"
