"""The `recdistill` CLI: jobs run in process, and every job's parser (flags, --config, errors)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from pipelines.cli import JOBS, job_parser, main
from pipelines.core.config import (
    ConfigParser,
    _split_optional,
    config_fields,
    make_config,
    nested_flags,
)

ROOT = Path(__file__).resolve().parents[1]


def test_prepare_in_process(tmp_path, capsys):
    out = tmp_path / "prep"
    res = main(
        ["prepare", "--dataset", "synthetic:users=80,items=60,per_user=10", "--out", str(out)]
    )
    assert set(res["protocols"]) == {"random", "temporal"}
    saved = json.loads((out / "stats.json").read_text())
    assert saved["stats"]["users"] == 80
    assert "ease(l=" in capsys.readouterr().out
    # a sample as large as the test users is the full evaluation; a smaller one ranks fewer
    full = res["protocols"]["temporal"]
    same = main(["prepare", "--dataset", "synthetic:users=80,items=60,per_user=10",
                 "--eval-users", "80", "--out", str(tmp_path / "same")])  # fmt: skip
    assert same["protocols"]["temporal"] == full
    few = main(["prepare", "--dataset", "synthetic:users=80,items=60,per_user=10",
                "--eval-users", "20", "--out", str(tmp_path / "few")])  # fmt: skip
    assert few["protocols"]["temporal"]["ease"]["users"] == 20
    als = main(["prepare", "--dataset", "synthetic:users=80,items=60,per_user=10",
                "--protocols", "temporal", "--collab", "als", "--out", str(tmp_path / "als")])  # fmt: skip
    assert "ease" not in als["protocols"]["temporal"]  # the baseline is named after its kind
    assert als["protocols"]["temporal"]["als"]["kind"] == "als"
    assert "als(d=64)" in capsys.readouterr().out


def test_config_file_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: synthetic:users=40,items=50,per_user=8\nprotocols: [temporal]\n")
    res = main(["prepare", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert list(res["protocols"]) == ["temporal"]
    assert res["config"]["out"] == str(tmp_path / "o")


def test_unknown_flags_and_fields_are_rejected(tmp_path):
    with pytest.raises(SystemExit):
        main(["prepare", "--no-such-flag", "1"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("colour: blue\n")
    with pytest.raises(SystemExit):
        main(["prepare", "--config", str(cfg)])
    with pytest.raises(SystemExit):
        main(["prepare", "--protocols", "sideways"])


def test_string_none_stays_a_string_for_choices():
    from pipelines.core.config import parse_config
    from pipelines.labels.generate_labels import GenerateLabelsConfig

    cfg = parse_config(GenerateLabelsConfig, ["--collab", "none", "--adapter", "none"])
    assert cfg.collab == "none" and cfg.adapter is None


# --------------------------------------------------------------- every job in the table
HEAVY = ("torch", "faiss", "matplotlib")
# jobs whose --help must not import HEAVY (the others' config modules import torch)
LIGHT = ("prepare", "adapt-teacher", "generate-labels", "index-bench", "bench-ray", "bench-prefix")
# values the generic generator below cannot guess (they must satisfy __post_init__)
SPECIAL = {
    "overrides": "{labels: {n_negatives: 10}}",
    "keep_ratio": 0.25,
}
SPECIAL_OF = {
    "BenchScaleConfig": {"sizes": ("300x200x10", "600x400x10")},
    "IndexBenchConfig": {"shard_kinds": ("flat",), "settings": ("flat", "sq8")},
    # --replicas/--ray-address go with --engine ray, which serves with one process per replica
    "ServeConfig": {"engine": "ray", "workers": 1},
    # the sample sets --no-teacher, and a --distill-scales grid needs --labels: no grid here
    # (tests/training/test_select.py parses one)
    "TrainStudentConfig": {"distill_scales": (), "temperatures": ()},
}


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _sample(cls) -> dict:
    """A value of the right type for every flag name (not the default where that is safe);
    defaults and types as the job's parser has them (shared groups, nested configs)."""
    out = {}
    parser = ConfigParser(cls)
    for name in parser.field_names():
        default = parser.get_default(name)
        optional, hint = _split_optional(parser._hints[name])
        origin = typing.get_origin(hint)
        special = {**SPECIAL, **SPECIAL_OF.get(cls.__name__, {})}
        if name in special:
            v = special[name]
        elif origin is typing.Literal:
            v = default
        elif origin is tuple:
            elem = typing.get_args(hint)[0]
            v = (typing.get_args(elem)[0],) if typing.get_origin(elem) else (3, 4)
        elif hint is bool:
            v = not default
        elif hint is int:
            v = default + 1
        elif hint is float:
            v = default / 2 if default else 0.0
        elif optional:
            v = "x"
        else:
            v = f"{default}_x"
        out[name] = v
    return out


def _flat(config) -> dict:
    """``config`` by flag name: a nested config's fields under their flag names."""
    nested = nested_flags(type(config))
    return {
        n: getattr(getattr(config, nested[n][0]), nested[n][1])
        if n in nested
        else getattr(config, n)
        for n in config_fields(type(config))
    }


def _flags(values: dict) -> list[str]:
    argv = []
    for k, v in values.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            argv += [flag] if v else ["--no-" + k.replace("_", "-")]
        elif isinstance(v, tuple):
            argv += [flag, *map(str, v)]
        else:
            argv += [flag, str(v)]
    return argv


def _parse(job: str, argv: list[str]):
    return job_parser(job)[0].parse_config(argv)


def _error(job: str, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        _parse(job, argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[1:] == [f"see recdistill {job} --help"]  # one line and the hint, no usage
    err = lines[0]
    assert err.startswith(f"recdistill {job}: error: ")
    return err


def _cls(job: str):
    return job_parser(job)[0].config_class


def _field_of(cls, pred):
    for f in dataclasses.fields(cls):
        optional, hint = _split_optional(_hints(cls)[f.name])
        if pred(optional, hint):
            return f.name
    return None


@pytest.mark.parametrize("job", list(JOBS))
def test_every_job_has_help(job, capsys):
    with pytest.raises(SystemExit) as exc:
        main([job, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: recdistill {job}") and "--config" in out


@pytest.mark.parametrize("job", list(JOBS))
def test_yaml_is_typed_exactly_like_flags(job, tmp_path):
    cls = _cls(job)
    values = _sample(cls)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})
    )
    from_flags = _parse(job, _flags(values))
    from_file = _parse(job, ["--config", str(cfg)])
    assert from_flags == from_file == make_config(cls, **values)
    for name, value in _flat(from_file).items():  # a float given 0 is 0.0, lists are tuples
        assert type(value) is type(values[name]), name
    # flags override the file
    name = _field_of(cls, lambda opt, h: h is int and not opt)
    flag, value = (f"--{name}", 7) if name else ("--" + config_fields(cls)[0], "other")
    again = _parse(job, ["--config", str(cfg), flag, str(value)])
    assert getattr(again, flag[2:]) == value


@pytest.mark.parametrize("job", list(JOBS))
def test_unknown_yaml_keys_and_flags_are_refused_with_the_valid_names(job, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("colour: blue\n")
    first = "out" if "out" in config_fields(_cls(job)) else config_fields(_cls(job))[0]
    err = _error(job, ["--config", str(cfg)], capsys)
    assert "colour" in err and first in err and str(cfg) in err
    err = _error(job, ["--colour", "blue"], capsys)
    assert "--colour" in err and f"--{first.replace('_', '-')}" in err and "valid flags" in err
    err = _error(job, ["--ou", "x"], capsys)  # no abbreviations
    assert "--ou" in err


@pytest.mark.parametrize("job", list(JOBS))
def test_bad_values_are_one_line_errors_from_yaml_as_from_flags(job, tmp_path, capsys):
    cls = _cls(job)
    name = _field_of(cls, lambda opt, h: h is int and not opt)
    if name is None:
        pytest.skip(f"{cls.__name__} has no int field")
    flag = "--" + name.replace("_", "-")
    err = _error(job, [flag, "many"], capsys)
    assert "invalid int value: 'many'" in err and flag in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{name}: many\n")
    err = _error(job, ["--config", str(cfg)], capsys)
    assert "invalid int value: 'many'" in err and str(cfg) in err and name in err
    cfg.write_text(f"{name}: 2.5\n")
    assert "invalid int value: '2.5'" in _error(job, ["--config", str(cfg)], capsys)
    choice = _field_of(cls, lambda opt, h: typing.get_origin(h) is typing.Literal)
    if choice is not None:
        err = _error(job, ["--" + choice.replace("_", "-"), "sideways"], capsys)
        allowed = typing.get_args(_split_optional(_hints(cls)[choice])[1])
        assert "invalid choice: 'sideways'" in err and all(repr(a) in err for a in allowed)


@pytest.mark.parametrize("job", list(JOBS))
def test_optional_fields_take_none(job, tmp_path):
    cls = _cls(job)
    name = _field_of(cls, lambda opt, h: opt)
    if name is None:
        pytest.skip(f"{cls.__name__} has no optional field")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{name}: null\n")
    base = ["--no-teacher"] if job == "train-student" else []  # else --labels is required
    flags = ["--" + name.replace("_", "-"), "none"]
    assert getattr(_parse(job, [*base, *flags]), name) is None
    assert getattr(_parse(job, [*base, "--config", str(cfg)]), name) is None


@pytest.mark.parametrize("job", [None, "prepare"])
def test_help_imports_no_heavy_module(job):
    argv = ["--help"] if job is None else [job, "--help"]
    code = (
        "import contextlib, io, sys\n"
        "from pipelines.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(sorted(m for m in sys.modules if m.startswith('pipelines.')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    heavy, modules = proc.stdout.splitlines()[-2:]
    assert heavy == "[]"
    if job is None:  # no job module at all
        assert eval(modules) == ["pipelines.cli"]


def test_light_jobs_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from pipelines.cli import job_parser\n"
        f"for job in {LIGHT!r}:\n"
        "    job_parser(job)[0].format_help()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def test_tuple_fields():
    assert _parse("benchmark", ["--indexes"]).indexes == ()
    cfg = _parse("benchmark", ["--indexes", "flat", "sq8", "--scale-sizes", "10,20", "30"])
    assert cfg.indexes == ("flat", "sq8") and cfg.scale_sizes == (10, 20, 30)
    assert _parse("prepare", ["--protocols", "temporal", "cold_items"]).protocols == (
        "temporal",
        "cold_items",
    )
    assert _parse("ablation", ["--seeds", "4", "5"]).seeds == (4, 5)
    assert _parse("index-bench", ["--lognormal-sizes", "none"]).lognormal_sizes is None
    assert _parse("index-bench", ["--lognormal-sizes", "5"]).lognormal_sizes == (5,)
    assert _parse("index-bench", []).lognormal_sizes is None


def test_tuple_element_errors(capsys):
    assert "invalid choice: 'sideways'" in _error(
        "prepare", ["--protocols", "random", "sideways"], capsys
    )
    assert "invalid int value: 'x'" in _error("ablation", ["--seeds", "1", "x"], capsys)
    # __post_init__ still checks what the annotation cannot (a non-empty list)
    assert "PrepareConfig.protocols=()" in _error("prepare", ["--protocols"], capsys)


def test_bool_flags(tmp_path):
    t = _parse("train-student", ["--no-teacher"])
    assert t.no_teacher is True and t.use_features is True and t.use_text is False
    t = _parse("train-student", ["--labels", "x", "--use-text", "--no-use-features"])
    assert t.use_text is True and t.use_features is False and t.no_teacher is False
    t = _parse("train-student", ["--labels", "x", "--use_text", "true", "--use-features=no"])
    assert t.use_text is True and t.use_features is False
    g = _parse("generate-labels", ["--overwrite", "--no-popularity"])
    assert g.overwrite is True and g.popularity is False
    assert _parse("generate-labels", ["--overwrite", "--no-overwrite"]).overwrite is False
    cfg = tmp_path / "c.yaml"
    cfg.write_text("no_teacher: true\nuse_features: false\n")
    t = _parse("train-student", ["--config", str(cfg)])
    assert t.no_teacher is True and t.use_features is False


def test_floats_ints_and_strings_from_yaml(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("no_teacher: true\nlr: 1\nweight_decay: 1e-4\nepochs: '3'\ndataset: 123\n")
    t = _parse("train-student", ["--config", str(cfg)])
    assert (t.lr, t.weight_decay, t.epochs, t.dataset) == (1.0, 1e-4, 3, "123")
    assert type(t.lr) is float


def test_choice_none_and_optional_none():
    g = _parse("generate-labels", ["--collab", "none", "--adapter", "none", "--model", "NULL"])
    assert g.collab == "none" and g.adapter is None and g.model is None
    assert _parse("generate-labels", ["--adapter", "runs/a"]).adapter == "runs/a"


def test_demo_overrides_from_a_flag_or_a_yaml_mapping(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("overrides:\n  labels: {n_negatives: 10}\n")
    from_file = _parse("demo", ["--config", str(cfg)])
    from_flag = _parse("demo", ["--overrides", '{"labels": {"n_negatives": 10}}'])
    assert from_file == from_flag
    assert from_file.step_overrides("labels") == {"n_negatives": 10}


def test_post_init_errors_and_bad_files_are_parser_errors(tmp_path, capsys):
    err = _error("train-student", [], capsys)
    assert "give --labels <folder> from generate-labels, or --no-teacher" in err
    err = _error("generate-labels", ["--content-map", "text", "--collab", "none"], capsys)
    assert "it needs collab='auto', 'ease' or 'als', not 'none'" in err
    assert "no such file" in _error("prepare", ["--config", str(tmp_path / "no.yaml")], capsys)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- a\n- b\n")
    assert "expected a mapping" in _error("prepare", ["--config", str(cfg)], capsys)
    cfg.write_text("seed: [1, 2]\n")
    assert "seed takes one value" in _error("prepare", ["--config", str(cfg)], capsys)
    cfg.write_text("demo_overrides: 1\n")  # any unknown key
    assert "valid fields" in _error("demo", ["--config", str(cfg)], capsys)
