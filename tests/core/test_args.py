"""Shared argument groups and nested configs in the job parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest
import yaml

from pipelines.core.args import OutputArgs, ThreadArgs
from pipelines.core.config import ConfigParser


@dataclass
class Inner:
    n_rows: int = field(default=0, metadata={"help": "set from the data", "cli": False})
    dim: int = field(default=8, metadata={"help": "embedding size"})
    kinds: tuple[str, ...] = ("a",)


@dataclass
class Job(OutputArgs, ThreadArgs):
    defaults: ClassVar[dict] = {"out": "runs/job", "threads": 1}
    mode: Literal["x", "y"] = "x"
    inner: Inner = field(default_factory=lambda: Inner(dim=16), metadata={"help": "the model"})


@dataclass
class OtherJob(OutputArgs):
    pass


def test_job_defaults_in_code_and_on_the_command_line():
    assert (Job().out, Job().threads) == ("runs/job", 1)
    assert OtherJob().out == "runs/out"  # the group's fallback
    parsed = ConfigParser(Job).parse_config([])
    assert parsed == Job()


def test_group_fields_are_declared_once_and_grouped_in_help(capsys):
    parser = ConfigParser(Job, prog="job")
    parser.print_help()
    text = capsys.readouterr().out
    for title in ("output:", "threads:", "inner:"):
        assert title in text
    assert "(default: runs/job)" in text
    assert parser.field_names() == ["threads", "out", "overwrite", "mode", "dim", "kinds"]


def test_nested_config_from_flags_and_from_a_yaml_section(tmp_path):
    parser = ConfigParser(Job)
    c = parser.parse_config(["--dim", "3", "--kinds", "b", "c", "--threads", "2"])
    assert c.inner == Inner(n_rows=0, dim=3, kinds=("b", "c")) and c.threads == 2
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"inner": {"dim": 5}, "mode": "y"}))
    c = parser.parse_config(["--config", str(path), "--mode", "x"])
    assert (c.inner.dim, c.mode) == (5, "x")


def test_fields_set_from_the_data_are_no_flags(capsys):
    with pytest.raises(SystemExit):
        ConfigParser(Job).parse_config(["--n-rows", "3"])
    assert "unrecognized arguments: --n-rows" in capsys.readouterr().err


def test_a_group_check_names_the_job(capsys):
    with pytest.raises(ValueError, match=r"Job\.threads is 0; expected an integer >= 1"):
        Job(threads=0)


def test_every_literal_field_is_checked_once_by_the_base():
    with pytest.raises(ValueError, match=r"Job\.mode is 'z'; allowed values: \['x', 'y'\]"):
        Job(mode="z")


@dataclass
class Weights:
    hard: float = 1.0
    kl: float = 0.0
    temperature: float = 1.0


@dataclass
class Trainer(OutputArgs):
    weights: Weights = field(
        default_factory=lambda: Weights(kl=1.0),
        metadata={"help": "loss weights", "prefix": "w_", "bare": ("temperature",)},
    )


def test_a_prefixed_nested_config_from_flags_yaml_and_code(tmp_path):
    from pipelines.core.config import config_fields, make_config

    assert config_fields(Trainer) == ["out", "overwrite", "w_hard", "w_kl", "temperature"]
    parser = ConfigParser(Trainer)
    c = parser.parse_config(["--w-kl", "0.5", "--temperature", "2"])
    assert c.weights == Weights(hard=1.0, kl=0.5, temperature=2.0)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"weights": {"kl": 0.25}, "w_hard": 0.0}))
    assert parser.parse_config(["--config", str(path)]).weights == Weights(0.0, 0.25, 1.0)
    assert make_config(Trainer, w_hard=2.0).weights == Weights(hard=2.0, kl=1.0)
    with pytest.raises(TypeError):
        make_config(Trainer, kl=1.0)  # the flat name is w_kl
