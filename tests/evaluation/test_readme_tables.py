"""`recdistill report-readme`: the README's result blocks rewritten from a (tiny, hand-made)
demo folder's reports; the text outside the markers kept; ``--check``; one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.evaluation.readme_tables import BLOCKS, current_blocks, marker

ROOT = Path(__file__).resolve().parents[2]


def _model(ndcg, *, params=None, size=None, **extra) -> dict:
    return {
        "ndcg@10": ndcg,
        "recall@10": 0.2,
        "mrr@10": 0.5,
        "params": params,
        "bytes": size,
        "teacher_top10_overlap": 0.5,
        "latency_ms_batch1": 0.125,
        "ndcg@10_ci": [ndcg - 0.01, ndcg + 0.01],
        **extra,
    }


def _warm(protocol: str) -> dict:
    return {
        "dataset": {
            "items": 1682,
            "split": {
                "protocol": protocol,
                "seed": 0,
                "test_users": 943,
                "test_interactions": 9988,
            },
        },
        "protocol": protocol,
        "models": {
            "ease": _model(0.3425, params=2_830_000, size=11_324_621),
            "teacher": {**_model(0.3425), "mix": {"ease": 1.0, "text": 0.0}},
            "student_hard": _model(0.3141, params=369_793, size=1_710_988),
            "student_distilled": _model(
                0.3304, params=369_793, size=1_710_988, user_encode_ms_batch1=0.4571
            ),
            "student_int8": _model(0.3293, params=173_000, size=424_412),
        },
        "indexes": {
            "flat": {
                "recall@10_vs_exact": 1.0,
                "qps_batch1": 39638.4,
                "qps_batch256": 145311.7,
                "p50_ms": 0.0227,
                "p99_ms": 0.0430,
                "bytes": 430637,
            }
        },
        "comparisons": {
            "distilled_minus_hard_ndcg@10": {
                "mean": 0.0164,
                "ci": [0.0070, 0.0262],
                "relative": 0.0522,
            },
            "int8_vs_distilled": {"ndcg@10_kept": 0.9965, "bytes_ratio": 4.03},
        },
    }


def _seg(ndcg20: float) -> dict:
    return {
        "ndcg@10": ndcg20 - 0.03,
        "ndcg@20": ndcg20,
        "recall@20": ndcg20 + 0.05,
        "recall@10": 0.1,
        "mrr@10": 0.6,
        "ndcg@20_ci": [ndcg20 - 0.01, ndcg20 + 0.01],
    }


def _cold() -> dict:
    def m(cold, warm, new, **cost):
        segs = {
            "cold": cold and _seg(cold),
            "warm": _seg(warm),
            "all": _seg(warm - 0.05),
            "new_users": new and _seg(new),
        }
        return {**_model(warm, **cost), "segments": segs}

    return {
        "dataset": {
            "split": {
                "protocol": "cold_items",
                "seed": 0,
                "cold_test_items": 168,
                "new_users": 94,
                "users": {"cold": 836},
            }
        },
        "protocol": "cold_items",
        "models": {
            "popularity": m(None, 0.1472, 0.3816),
            "teacher": m(0.4457, 0.3210, None),
            "student_distilled": m(0.4522, 0.3135, 0.3432, params=410_817, size=4_469_136),
        },
        "indexes": {},
        "comparisons": {
            "student_distilled_vs_teacher": {
                "cold_ndcg@20_ratio": 1.0146,
                "cold_ndcg@20_diff": 0.0065,
                "cold_ndcg@20_diff_ci": [0.0018, 0.0114],
            },
            "new_users:student_distilled_vs_popularity": {
                "new_users_ndcg@20_ratio": 0.8994,
                "new_users_ndcg@20_diff": -0.0384,
                "new_users_ndcg@20_diff_ci": [-0.0842, 0.0114],
            },
        },
    }


README = "# title\n\nprose with  trailing spaces  \nand ünïcode\n\n{blocks}\n\nthe end, no newline"


def _readme(path: Path, names=tuple(BLOCKS)) -> Path:
    blocks = "\n\nbetween\n\n".join(
        f"{marker(n, 'begin')}\nold {n}\n{marker(n, 'end')}" for n in names
    )
    path.write_text(README.format(blocks=blocks), encoding="utf-8")
    return path


@pytest.fixture
def demo(tmp_path) -> Path:
    d = tmp_path / "demo"
    for rel, rep in (
        ("benchmark", _warm("random")),
        ("temporal/benchmark", _warm("temporal")),
        ("cold/benchmark", _cold()),
    ):
        (d / rel).mkdir(parents=True)
        (d / rel / "report.json").write_text(json.dumps(rep))
    (d / "demo.json").write_text(json.dumps({"seconds": 787.7, "commit": "abc1234"}))
    return d


def _run(demo: Path, readme: Path, *flags: str) -> dict:
    return main(["report-readme", "--run", str(demo), "--readme", str(readme), *flags])


def test_blocks_hold_the_reports_numbers(demo, tmp_path):
    readme = _readme(tmp_path / "R.md")
    res = _run(demo, readme)
    assert res["changed"] == list(BLOCKS) and res["commit"] == "abc1234"
    b = current_blocks(readme.read_text(encoding="utf-8"), "R.md")
    random, temporal = b["random"], b["temporal"]
    assert "(commit abc1234, 788 s for the whole demo)" in random
    assert "943 test users, 9,988 test interactions" in random
    assert (
        "| student_distilled | 0.3304 | [0.3204, 0.3404] | 0.2000 | 0.5000 | 0.500 | 370k | 1.6 MiB | 0.125 |"
        in random
    )
    assert (
        "| ease | 0.3425 | [0.3325, 0.3525] | 0.2000 | 0.5000 | 0.500 | 2.83M | 10.8 MiB |"
        in random
    )
    assert (
        "Distilled minus hard-only NDCG@10: +0.0164 (+5.2%), 95% paired bootstrap over users "
        "[+0.0070, +0.0262]; int8 keeps 99.7% of the distilled student at 1/4.0 of its bytes."
    ) in random
    assert "ease 0.965x" in random and "student_int8 99.7%" in random
    assert "Teacher mix weights (chosen on validation): ease 1.00, text 0.00." in random
    assert "| flat | 1.0000 | 39,638 | 145,312 | 0.023 | 0.043 | 420.5 KiB |" in b["random-indexes"]
    # the temporal table's last column is the user encoder's time
    assert "user encode ms (batch 1) |" in temporal and "latency ms" not in temporal
    assert "| student_distilled | 0.3304 |" in temporal and "| 0.457 |" in temporal
    cold = b["cold-items"]
    assert "168 cold-test items, 836 users with a cold-test target" in cold
    assert "| popularity | cannot score | - | - | - | 0.1172 | 0.0672 | 0.0972 | - | - |" in cold
    assert (
        "| student_distilled | 0.4522 | [0.4422, 0.4622] | 0.5022 | 0.4222 | 0.2835 | 0.2335 | 0.2635 | 411k | 4.3 MiB |"
        in cold
    )
    assert "student_distilled vs teacher: cold NDCG@20 ratio 1.015" in cold
    assert "transductive" not in cold.split("\n\n")[1]  # no column: no model has the segment
    new = b["new-users"]
    assert "94 new users" in new and "| teacher | cannot score | - | - | - | - |" in new
    assert "| popularity | 0.3816 | [0.3716, 0.3916] |" in new
    assert "student_distilled vs popularity: new-user NDCG@20 ratio 0.899" in new


def test_a_cold_transductive_segment_adds_its_column(demo, tmp_path):
    path = demo / "cold/benchmark/report.json"
    rep = json.loads(path.read_text())
    rep["models"]["student_distilled"]["segments"]["cold_transductive"] = _seg(0.4811)
    rep["models"]["student_distilled_transductive"] = rep["models"]["student_distilled"]
    path.write_text(json.dumps(rep))
    readme = _readme(tmp_path / "R.md")
    _run(demo, readme)
    block = current_blocks(readme.read_text(encoding="utf-8"), "R.md")["cold-items"]
    table = block.split("\n\n")[1]
    header, _, *rows = table.splitlines()
    assert "| cold NDCG@10 | cold transductive NDCG@20 | warm NDCG@10 |" in header
    assert [r.split(" | ")[5] for r in rows] == ["-", "-", "0.4811", "0.4811"]
    assert rows[-1].startswith("| student_distilled_transductive |")  # report order


def test_text_outside_the_markers_is_kept_and_a_rerun_changes_nothing(demo, tmp_path):
    readme = _readme(tmp_path / "R.md")
    before = readme.read_text(encoding="utf-8")
    _run(demo, readme)
    after = readme.read_text(encoding="utf-8")

    def outside(text):
        parts, rest = [], text
        for n in BLOCKS:
            head, rest = rest.split(marker(n, "begin"), 1)
            parts.append(head)
            rest = rest.split(marker(n, "end"), 1)[1]
        return parts + [rest]

    assert outside(after) == outside(before) and after != before
    mtime = readme.stat().st_mtime_ns
    assert _run(demo, readme)["changed"] == []
    assert readme.read_text(encoding="utf-8") == after and readme.stat().st_mtime_ns == mtime


def test_check_passes_after_a_write_and_fails_after_a_number_changes(demo, tmp_path):
    readme = _readme(tmp_path / "R.md")
    _run(demo, readme)
    assert _run(demo, readme, "--check")["changed"] == []
    path = demo / "temporal/benchmark/report.json"
    rep = json.loads(path.read_text())
    rep["models"]["teacher"]["ndcg@10"] = 0.1213
    path.write_text(json.dumps(rep))
    text = readme.read_bytes()
    argv = [
        "-m",
        "pipelines.cli",
        "report-readme",
        "--run",
        str(demo),
        "--readme",
        str(readme),
        "--check",
    ]
    proc = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"recdistill report-readme: {readme}: table 'temporal' differs from the run in {demo}; "
        f"rewrite it with recdistill report-readme --run {demo} --readme {readme}"
    ]
    assert readme.read_bytes() == text  # --check writes nothing


def _error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recdistill report-readme: error: ")
    return lines[0]


def test_a_missing_marker_or_report_is_a_one_line_error(demo, tmp_path, capsys):
    readme = _readme(tmp_path / "R.md", names=[n for n in BLOCKS if n != "new-users"])
    before = readme.read_text(encoding="utf-8")
    err = _error(["report-readme", "--run", str(demo), "--readme", str(readme)], capsys)
    assert "<!-- report-readme:new-users:begin -->" in err and str(readme) in err
    assert readme.read_text(encoding="utf-8") == before
    readme = _readme(tmp_path / "R2.md")
    (demo / "cold/benchmark/report.json").unlink()
    err = _error(["report-readme", "--run", str(demo), "--readme", str(readme)], capsys)
    assert str(demo / "cold/benchmark/report.json") in err and "not found" in err
    (demo / "cold/benchmark/report.json").write_text(json.dumps({"protocol": "cold_items"}))
    err = _error(["report-readme", "--run", str(demo), "--readme", str(readme)], capsys)
    assert str(demo / "cold/benchmark/report.json") in err and "'dataset'" in err


def test_the_commit_comes_from_demo_json_or_the_flag(demo, tmp_path, capsys):
    readme = _readme(tmp_path / "R.md")
    err = _error(
        ["report-readme", "--run", str(demo), "--readme", str(readme), "--commit", "fffffff"],
        capsys,
    )
    assert "abc1234" in err and "--commit fffffff" in err
    (demo / "demo.json").write_text(json.dumps({"seconds": 10.0}))  # made before it was recorded
    assert _run(demo, readme)["commit"] == "unknown"
    _run(demo, readme, "--commit", "9ff80f2")
    assert "(commit 9ff80f2, 10 s for the whole demo)" in readme.read_text(encoding="utf-8")


def test_the_repository_readme_has_every_marker_pair():
    blocks = current_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "README.md")
    assert set(blocks) == set(BLOCKS)
    assert all("Generated by `recdistill report-readme`" in b for b in blocks.values())
