"""Every ``recdistill <job>`` and ``python -m pipelines...`` command in the docs parses.

Commands are taken from README.md, docs/*.md and data/README.md (fenced code blocks and
inline backticks, ``\\`` continuations joined, ``# comments`` dropped; teacher.md's ``$P`` and
its flag sets are expanded). For each one, ``--help`` of that subcommand must exit 0, and
every ``--flag`` the doc uses must appear in that help. Only the public interface is used:
``pipelines.cli.main([job, "--help"])`` raising ``SystemExit(0)`` (and ``SystemExit(2)`` for
a parse error), and ``python -m <module> --help`` in a subprocess for modules run directly.
Each value in the doc must belong to a flag that takes one (``--sizes 100000 1000000`` would
leave ``1000000`` over); ``<placeholders>`` and ``...`` are allowed.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")
START = re.compile(r"(?:^|[\s\"'(/])((?:recdistill|python -m pipelines[\w.]*)\s.*)$")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z0-9][\w-]*")


def _definitions(text: str) -> dict[str, str]:
    """teacher.md: Define `P=".venv/bin/python -m pipelines.cli"`; `A` is `--max-users ..`."""
    out = {m[1]: m[2] for m in re.finditer(r"`(\w+)=\"([^\"]*)\"`", text)}
    out.update({m[1]: m[2] for m in re.finditer(r"`\$?(\w+)` is\s+`([^`]+)`", text)})
    return out


def _expand(line: str, defs: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: defs.get(m[1], m[0]), line)


def doc_commands() -> list[tuple[str, str]]:
    """(where, command) for every command in the docs."""
    found = []
    for path in DOCS:
        text = path.read_text()
        defs = _definitions(text)
        where = str(path.relative_to(ROOT))
        lines = []
        for block in FENCE.findall(text):
            lines += re.sub(r"\\\n\s*", " ", block).splitlines()
        lines += [" ".join(s.split()) for s in INLINE.findall(FENCE.sub("", text))]
        for line in lines:
            line = re.sub(r"(^|\s)#.*$", "", _expand(line, defs))
            m = START.search(line)
            if m and not line.lstrip().startswith("make "):
                found.append((where, m[1].strip()))
    return found


def _tokens(command: str) -> list[str]:
    words = shlex.split(re.sub(r"<[^<>]*>", "<placeholder>", command.replace("...", " ")))
    if words[0] == "recdistill":
        return ["recdistill", *words[1:]]
    return ["module", words[2], *words[3:]]  # python -m <module> ...


@cache
def _help_recdistill(job: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        main([job, "--help"])
    return exc.value.code, buf.getvalue()


@cache
def _help_module(module: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _norm(flag: str) -> str:
    return flag.split("=", 1)[0].replace("_", "-")


def _arities(help_text: str) -> dict[str, str]:
    """flag -> "0", "?" (optional value), "1" or "+" from the help's option lines."""
    out = {}
    for line in help_text.splitlines():
        m = re.match(r"\s+(-.*?)(?:\s{2,}|$)", line)
        if not m:
            continue
        for alt in m[1].split(", "):
            name, _, rest = alt.partition(" ")
            arity = "+" if "..." in rest else "?" if rest.startswith("[") else "1" if rest else "0"
            out[_norm(name)] = arity
    return out


def _is_flag(word: str) -> bool:
    """A flag, not a quoted value with spaces (`--serve-flags "--workers 2"`)."""
    return word.startswith("--") and " " not in word.strip()


def _check_values(args: list[str], arities: dict[str, str]) -> list[str]:
    """Tokens that no flag takes as its value (e.g. ``--sizes 100000 1000000``)."""
    stray, i = [], 0
    while i < len(args):
        word = args[i]
        i += 1
        if not _is_flag(word):
            stray.append(word)
            continue
        arity = "0" if "=" in word else arities.get(_norm(word), "0")
        if arity in ("1", "?") and i < len(args) and not _is_flag(args[i]):
            i += 1
        elif arity == "+":
            while i < len(args) and not _is_flag(args[i]):
                i += 1
    return stray


COMMANDS = doc_commands()


def test_the_docs_have_commands():
    kinds = {_tokens(c)[1] for _, c in COMMANDS}
    assert {"generate-labels", "train-student", "index-bench", "bench-ray"} <= kinds
    assert any("index-bench --sizes 100000 1000000" in c for _, c in COMMANDS)  # inline, 2 lines
    assert any(w == "docs/teacher.md" and "--positives-per-user" in c for w, c in COMMANDS)


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_doc_command_parses(where, command):
    words = _tokens(command)
    kind, target, args = words[0], words[1], words[2:]
    if target.startswith("<"):  # a placeholder: `recdistill <job> --help`
        pytest.skip(f"placeholder subcommand {target}")
    if kind == "module" and target == "pipelines.cli":
        if not args:
            pytest.skip("python -m pipelines.cli without a job")
        kind, target, args = "recdistill", args[0], args[1:]
    code, text = _help_recdistill(target) if kind == "recdistill" else _help_module(target)
    assert code == 0, f"{where}: `{command}`: --help exited {code}\n{text[-2000:]}"
    known = {_norm(f) for f in FLAG.findall(text)}
    # a quoted word with spaces is a flag's value (`--serve-flags "--workers 2"`), not flags
    flags = " ".join(a for a in args if " " not in a.strip())
    unknown = [f for f in FLAG.findall(flags) if _norm(f) not in known]
    assert not unknown, f"{where}: `{command}`: flags unknown to `{target}`: {unknown}"
    stray = [w for w in _check_values(args, _arities(text)) if not w.startswith("<")]
    assert not stray, f"{where}: `{command}`: values no flag of `{target}` takes: {stray}"


def test_a_parse_error_is_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["train-student", "--no-such-flag", "1"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["no-such-job", "--help"])
    assert exc.value.code == 2
