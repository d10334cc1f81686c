"""One way to do each thing: the shared pieces are defined once, in the lowest layer that every
user may import, and the other modules call them (read with ``ast``: nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "llm_teacher", "student", "pipelines")

# name -> the one module that defines it (as a module-level function)
ONE_HOME = {
    "atomic_write": "common/io.py",
    "atomic_dir": "common/io.py",
    "write_json": "common/io.py",
    "to_dict": "common/config.py",
    "from_dict": "common/config.py",
    "versions": "common/versions.py",
    "check_int": "common/config.py",
    "check_float": "common/config.py",
    "check_choice": "common/config.py",
    "check_literals": "common/config.py",
    "load_student": "student/loading.py",
}
# spellings the copies had: none may come back, at any depth
COPIES = {
    "write_json_atomic",
    "_versions",
    "_check_int",
    "_check_int_arg",
    "_is_int",
    "_check_float",
}


def _functions(root: Path = ROOT) -> list[tuple[str, str, bool]]:
    """(file, function name, defined at module level) over the project's packages."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            rel = str(path.relative_to(root))
            top = {id(n) for n in tree.body}
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    out.append((rel, node.name, id(node) in top))
    return out


FUNCTIONS = _functions()


@pytest.mark.parametrize("name", sorted(ONE_HOME))
def test_defined_once_in_its_home(name):
    homes = [f for f, n, top in FUNCTIONS if n == name and top]
    assert homes == [ONE_HOME[name]], f"{name} is defined in {homes}; keep one in {ONE_HOME[name]}"


def test_no_copy_comes_back():
    found = [f"{f}: {n}" for f, n, _ in FUNCTIONS if n in COPIES]
    assert found == [], f"copies of a shared helper: {found}; call the one in common instead"


def _kinds() -> set[str]:
    """The names in ``IndexKind = Literal[...]`` of ``student/serving/config.py``."""
    tree = ast.parse((ROOT / "student/serving/config.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "IndexKind":
            return {e.value for e in ast.walk(node.value) if isinstance(e, ast.Constant)}
    raise AssertionError("student/serving/config.py defines no IndexKind")


def test_one_list_of_index_kinds():
    """Only ``IndexKind`` spells every index kind; other modules take it (or the kinds
    registry, whose keys are checked against it on import) instead of a copy."""
    kinds = _kinds()
    copies = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Subscript):
                    words = {
                        e.value
                        for e in ast.walk(node)
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    }
                    if kinds <= words:
                        copies.append(str(path.relative_to(ROOT)))
    assert len(kinds) >= 4 and set(copies) == {"student/serving/config.py"}, copies


def test_the_walk_sees_a_planted_copy(tmp_path):
    """The walk finds a second writer planted in a throwaway tree (so the tests above can fail)."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "student" / "x.py").write_text(
        "def atomic_dir(p):\n    def _versions():\n        pass\n"
    )
    found = _functions(tmp_path)
    assert ("student/x.py", "atomic_dir", True) in found
    assert ("student/x.py", "_versions", False) in found


MAX_FUNCTION_LINES, MAX_MODULE_LINES = 80, 450


def test_functions_and_modules_stay_small():
    """One job a module, one step a function: no function over 80 lines (``def`` to its end)
    and no module over 450 lines in the packages."""
    big = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            rel = str(path.relative_to(ROOT))
            if text.count("\n") > MAX_MODULE_LINES:
                big.append(f"{rel}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        big.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert big == [], big
