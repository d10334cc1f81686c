"""The layout is the data flow: import arrows point back up the flow only.

Read with ``ast`` (nothing is imported). Fails on an import cycle between project modules,
on ``llm_teacher`` <-> ``student`` (or either importing ``pipelines``; both may import the
bottom layer ``common``, which imports no project package), on a pipelines stage
importing a later stage, and on a module importing a sibling job of its own stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "llm_teacher", "student", "pipelines")
# pipelines stages in data-flow order; `cli` and `demo` sit on top and may import any stage
STAGES = (
    "core",
    "data",
    "baselines",
    "labels",
    "training",
    "compression",
    "serving",
    "evaluation",
    "experiments",
)
TOP = ("pipelines.cli", "pipelines.demo")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    """module -> project modules it imports (anywhere in the file, lazy imports too)."""
    edges: dict[str, set[str]] = {}
    for mod, path in modules.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        out = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package[: len(package) - node.level + 1] + ([base] if base else [])
                    )
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for t in targets:
                r = _resolve(t, modules)
                if r and r != mod and not mod.startswith(r + "."):
                    out.add(r)
                    break
        edges[mod] = out
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w) :] + [w]
            if w not in state and (c := visit(w)):
                return c
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state and (c := visit(v)):
            return c
    return None


def _stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if parts[0] == "pipelines" and len(parts) >= 2 and mod not in TOP else None


def _jobs() -> set[str]:
    """Modules the CLI runs as jobs (read from ``pipelines/cli.py`` without importing it)."""
    tree = ast.parse((ROOT / "pipelines" / "cli.py").read_text())
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in MODULES
    }


def forbidden_arrows(edges: dict[str, set[str]], jobs: set[str]) -> list[str]:
    bad = []
    for mod, outs in edges.items():
        top = mod.split(".")[0]
        for dst in outs:
            dtop = dst.split(".")[0]
            if top == "common" and dtop != top:
                bad.append(f"{mod} -> {dst}: common, the bottom layer, imports no project package")
            if top in ("llm_teacher", "student") and dtop not in (top, "common"):
                bad.append(f"{mod} -> {dst}: {top} imports only itself and common")
            if mod in TOP or top != "pipelines" or dtop != "pipelines":
                continue
            if dst in TOP:
                bad.append(f"{mod} -> {dst}: only the CLI knows every job")
                continue
            s, d = _stage(mod), _stage(dst)
            if s is None or d is None:
                bad.append(f"{mod} -> {dst}: every pipelines module lives in a stage folder")
            elif STAGES.index(d) > STAGES.index(s):
                bad.append(f"{mod} -> {dst}: stage {s!r} imports the later stage {d!r}")
            elif d == s and dst in jobs:
                bad.append(f"{mod} -> {dst}: imports a sibling job of stage {s!r}")
    return bad


def test_every_pipelines_module_is_in_a_known_stage():
    for mod in MODULES:
        if mod.startswith("pipelines.") and mod not in TOP:  # the root package holds nothing
            assert _stage(mod) in STAGES, f"{mod}: not in a stage folder {STAGES}"


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, find_cycle(import_graph())


def test_arrows_point_back_up_the_flow():
    assert forbidden_arrows(import_graph(), _jobs()) == []


def test_the_checks_catch_what_they_should(tmp_path):
    # the checker itself fails on a cycle, a later-stage arrow, a sibling job and student ->
    # llm_teacher: each planted in a throwaway tree
    files = {
        "student/a.py": "import llm_teacher.x\nimport common.c\n",
        "common/c.py": "import student.a\n",
        "llm_teacher/x.py": "",
        "pipelines/data/d.py": "from pipelines.training import t\n",
        "pipelines/training/t.py": "from pipelines.training.j import run\n",
        "pipelines/training/j.py": "import pipelines.training.t\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    edges = import_graph({rel[:-3].replace("/", "."): tmp_path / rel for rel in files})
    assert find_cycle(edges) is not None
    bad = "\n".join(forbidden_arrows(edges, {"pipelines.training.j"}))
    assert "student.a -> llm_teacher.x" in bad
    assert "common.c -> student.a" in bad
    assert "student.a -> common.c" not in bad
    assert "later stage 'training'" in bad
    assert "sibling job" in bad


@pytest.mark.parametrize("pkg", PACKAGES)
def test_package_has_modules(pkg):
    assert any(m.startswith(pkg) for m in MODULES)
