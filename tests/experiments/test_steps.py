"""The step graph: a step is reused while its key (config, input keys, data fingerprint) is
unchanged and none of its inputs ran again; a failed step is recorded and blocks what follows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.layout import RunLayout
from pipelines.experiments.steps import STEP_FILE, Step, StepGraph, step_key


@dataclass
class Cfg:
    value: int = 0
    out: str = ""
    overwrite: bool = False


def _chain(root: Path, calls: list, a: int = 0, b: int = 0) -> list[Step]:
    def job(name):
        def run(cfg):
            assert cfg.overwrite  # the step's own folder
            calls.append(name)
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            (Path(cfg.out) / "result.json").write_text(json.dumps({"value": cfg.value}))
            return {"value": cfg.value}

        return run

    return [
        Step("a", job("a"), Cfg(a, str(root / "a")), root / "a", (), "result.json"),
        Step("b", job("b"), Cfg(b, str(root / "b")), root / "b", ("a",), "result.json"),
    ]


def _run(steps, fingerprint="f0"):
    graph = StepGraph(fingerprint)
    return {s.name: graph.run(s) for s in steps}


def test_unchanged_steps_are_reused_and_a_change_redoes_what_follows(tmp_path):
    calls = []
    first = _run(_chain(tmp_path, calls))
    assert calls == ["a", "b"] and first["b"].result == {"value": 0}
    assert json.loads((tmp_path / "a" / STEP_FILE).read_text())["key"] == first["a"].key
    again = _run(_chain(tmp_path, calls))
    assert calls == ["a", "b"] and not again["b"].ran and again["b"].result == {"value": 0}
    _run(_chain(tmp_path, calls, b=1))  # b's config: b only
    assert calls == ["a", "b", "b"]
    _run(_chain(tmp_path, calls, b=1), fingerprint="f1")  # other data: everything
    assert calls == ["a", "b", "b", "a", "b"]
    (tmp_path / "a" / "result.json").unlink()  # a redone with the same key: b follows
    _run(_chain(tmp_path, calls, b=1), fingerprint="f1")
    assert calls[-2:] == ["a", "b"]


def test_the_key_covers_config_inputs_and_fingerprint():
    base = step_key("s", {"x": 1}, ["k"], "f")
    assert base == step_key("s", {"x": 1}, ["k"], "f")
    others = [
        step_key("t", {"x": 1}, ["k"], "f"),
        step_key("s", {"x": 2}, ["k"], "f"),
        step_key("s", {"x": 1}, ["j"], "f"),
        step_key("s", {"x": 1}, ["k"], "g"),
    ]
    assert base not in others and len(set(others)) == 4


def test_a_failed_step_blocks_the_next_and_an_unselected_one_keeps_its_record(tmp_path):
    rows = {"a": {"rc": 1}}

    def steps():
        return [
            Step(n, lambda argv, n=n: dict(rows.get(n, {"rc": 0})), [n], tmp_path,
                 (prev,) if prev else (), marker=tmp_path / f"{n}.json",
                 done=lambda r: r["rc"] == 0)
            for prev, n in ((None, "a"), ("a", "b"))
        ]  # fmt: skip

    graph = StepGraph("f")
    a, b = (graph.run(s) for s in steps())
    assert a.ran and a.result == {"rc": 1} and b.blocked_by == "a" and b.result is None
    rows.clear()
    graph = StepGraph("f")
    a, b = (graph.run(s) for s in steps())
    assert a.ran and b.ran  # a failed step is never reused
    graph = StepGraph("f")
    a = graph.run(steps()[0], selected=False)
    assert not a.ran and a.result == {"rc": 0}  # kept from the marker
    assert not graph.run(steps()[1]).ran


def test_run_layout_names_the_demo_folders(tmp_path):
    run = RunLayout(tmp_path)
    assert run.model("student_distilled") == tmp_path / "student_distilled" / "model"
    assert run.int8_fast == tmp_path / "compressed" / "int8_fast"
    assert run.cold.labels == tmp_path / "cold" / "labels"
