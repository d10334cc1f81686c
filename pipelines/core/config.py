"""Job configs: dataclasses with ``help`` metadata, JSON/YAML round trip, and the CLI parser.

The round trip and value checks are ``common.config``'s.

A job is ``run(config) -> metrics dict``. Its subcommand's parser is a
``transformers.HfArgumentParser`` built from the config's annotations (:class:`ConfigParser`):
``str``/``int``/``float``, ``X | None`` (``none`` or ``null`` gives None), ``Literal[...]``
choices, ``bool`` (``--x``, ``--x false``, ``--no-x``), ``tuple[X, ...]`` (space-separated
values; none at all is the empty tuple; numbers may also be comma-separated). ``--config
file.yaml`` is turned into the same flags (placed before the command line's, so flags override
it) and parsed by the same parser: a file value is typed and validated exactly like a flag.
Unknown flags and fields are refused with the valid names; a bad value is a one-line
``parser.error`` (exit code 2).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from transformers.hf_argparser import HfArgumentParser, string_to_bool

from common.config import field_default
from pipelines.core.help_format import HelpFormatter

T = TypeVar("T")
NONE_WORDS = ("none", "null")


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"--config {p}: no such file")
    text = p.read_text()
    data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {p}: expected a mapping of field: value, got {type(data).__name__}"
        )
    return data


# ---------------------------------------------------------------------------- field types


def _split_optional(hint) -> tuple[bool, Any]:
    """(is Optional, the hint without None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return False, hint


def _is_mapping_union(hint) -> bool:
    """``str | dict`` (e.g. ``DemoConfig.overrides``): a string, or a mapping from a file."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and dict in {
        typing.get_origin(a) or a for a in typing.get_args(hint)
    }


def _named(fn: Callable, name: str) -> Callable:
    fn.__name__ = name  # argparse's "invalid <name> value: 'x'"
    return fn


def _element_type(elem, optional: bool) -> tuple[Callable, tuple | None]:
    """(argparse ``type``, ``choices``) for one value of a field."""
    if typing.get_origin(elem) is Literal:
        choices = typing.get_args(elem)
        by_text = {str(c): c for c in choices}
        if optional:
            choices = (*choices, None)
        fn = _named(
            lambda s: None if optional and s.lower() in NONE_WORDS else by_text.get(s, s), "choice"
        )
        return fn, choices
    base = string_to_bool if elem is bool else elem
    if not optional:
        return base, None
    name = getattr(elem, "__name__", str(elem))
    return _named(lambda s: None if s.lower() in NONE_WORDS else base(s), name), None


class _TupleAction(argparse.Action):
    """``nargs="*"`` values as a tuple; ``1,2 3`` -> (1, 2, 3) for numbers; ``none`` -> None."""

    def __init__(self, *args, numeric: bool = False, **kwargs):
        self.numeric = numeric
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.numeric:
            values = [x for part in values for x in part]
        setattr(namespace, self.dest, None if list(values) == [None] else tuple(values))


class ConfigParser(HfArgumentParser):
    """The parser of one job's config dataclass: ``HfArgumentParser`` plus tuples, ``none``
    for Optional fields, ``--no-x`` for every bool, ``--config`` and strict errors.

    Each flag is listed once, dashed (``--collab-memory-gb``); the underscore spelling is
    still accepted. An error is one line, ``<prog>: error: ...``, and a hint to ``--help``.
    A ``--config`` file may hold a group's fields as a section (``data: {dataset: ...}``,
    see :attr:`sections`); :attr:`file_keys` names flags that are not fields (the CLI's
    own-data flags) which a file may also set."""

    def __init__(self, config_class: type, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("usage", "%(prog)s [--config FILE] [--flag VALUE ...]")
        super().__init__(None, **kwargs)
        self.config_class = config_class
        self._context = ""
        self.namespace: argparse.Namespace | None = None  # of the last parse_config
        self.file_keys: set[str] = set()
        self.group_fields: dict[str, list[str]] = {}  # group title -> its field names
        self.add_argument(
            "--config",
            metavar="FILE",
            help="YAML or JSON file of field: value, typed like the flags; flags override it",
        )
        self.dataclass_types = [config_class]
        self._groups: dict[str, argparse._ArgumentGroup] = {}
        # field of config_class holding a nested config -> (its class, its flag names)
        self.nested: dict[str, tuple[type, tuple[str, ...]]] = {}
        self._hints: dict[str, Any] = {}  # flag field name -> its type
        self._add_dataclass_arguments(config_class)

    @property
    def sections(self) -> dict[str, list[str]]:
        """``--config`` sections: a group's title -> the keys it may hold (its fields, and for
        ``data`` the :attr:`file_keys` too)."""
        out = {t: list(names) for t, names in self.group_fields.items() if t != "options"}
        if "data" in out:
            out["data"] += sorted(self.file_keys)
        return out

    def data_group(self) -> argparse._ArgumentGroup:
        return self._group("data")

    def _hide_twins(self) -> None:
        """Show each flag once, dashed; the underscore spelling stays a valid flag."""
        for action in self._actions:
            dashed = [s for s in action.option_strings if "_" not in s]
            if dashed:
                action.option_strings = dashed

    def format_help(self) -> str:
        self._hide_twins()
        return super().format_help()

    def parse_known_args(self, args=None, namespace=None):
        self._hide_twins()  # error messages name the dashed flag
        return super().parse_known_args(args, namespace)

    # -- building
    def _group(self, title: str, description: str | None = None):
        if title not in self._groups:
            self._groups[title] = self.add_argument_group(title, description)
        return self._groups[title]

    def _parse_dataclass_field(self, parser, field: dataclasses.Field):
        """Route a field: a nested config becomes a group of its own fields' flags; a field of
        a shared argument group (``pipelines.core.args``) goes under that group's title, with
        the job's default."""
        if dataclasses.is_dataclass(field.type):
            return self._add_nested(field)
        owner = _declaring_class(self.config_class, field.name)
        title = owner.__dict__.get("group_title") if owner is not None else None
        if field.name == "dataset":  # a job's own dataset field too (prepare's)
            title = "data"
        title = field.metadata.get("group", title)  # a job's own field may join a group
        job_defaults = getattr(self.config_class, "job_defaults", None)
        if job_defaults is not None and field.name in job_defaults():
            field = copy.copy(field)
            field.default, field.default_factory = job_defaults()[field.name], dataclasses.MISSING
        self._hints[field.name] = field.type
        grouped = bool(title) and parser is self
        self.group_fields.setdefault(title if grouped else "options", []).append(field.name)
        self._add_field(self._group(title) if grouped else parser, field)

    def _add_nested(self, field: dataclasses.Field) -> None:
        """The fields of a nested config (``TrainStudentConfig.model``: a ``TwoTowerConfig``)
        as flags in a group of their own (see :func:`nested_flags`)."""
        group = self._group(field.name, str(field.metadata.get("help", "")) or None)
        base, names = field_default(field), []
        hints = typing.get_type_hints(field.type)
        for flag, (outer, inner) in nested_flags(self.config_class).items():
            if outer != field.name:
                continue
            f = copy.copy(next(x for x in dataclasses.fields(field.type) if x.name == inner))
            f.name, f.type = flag, hints[inner]
            f.default, f.default_factory = getattr(base, inner), dataclasses.MISSING
            self._hints[flag] = f.type
            self._add_field(group, f)
            names.append(flag)
        self.nested[field.name] = (field.type, tuple(names))

    def _add_field(self, parser, field: dataclasses.Field):
        flags = [f"--{field.name}"]
        if "_" in field.name:
            flags.append(f"--{field.name.replace('_', '-')}")
        help_ = str(field.metadata.get("help", "")).replace("%", "%%")
        optional, hint = _split_optional(field.type)
        origin = typing.get_origin(hint)
        default = field_default(field)
        if _is_mapping_union(field.type):
            parser.add_argument(*flags, type=str, default=default, help=help_)
        elif origin is tuple:
            elem = typing.get_args(hint)[0]
            type_, choices = _element_type(elem, optional)
            numeric = elem in (int, float)
            if numeric:
                type_ = _comma_list(type_)
            parser.add_argument(
                *flags,
                nargs="*",
                type=type_,
                choices=None if numeric else choices,
                default=default,
                action=_TupleAction,
                numeric=numeric,
                help=help_,
            )
        elif optional:
            type_, choices = _element_type(hint, True)
            parser.add_argument(
                *flags,
                type=type_,
                choices=choices,
                default=default,
                metavar=None if choices else field.name.upper(),
                help=help_ + " ('none' for None)",
            )
        else:  # str, int, float, bool, Literal: the library's own handling
            plain = copy.copy(field)
            plain.metadata = types.MappingProxyType({"help": help_})
            super()._parse_dataclass_field(parser, plain)
            if field.type is not bool:
                return
            if field.name.startswith("no_"):
                parser._actions[-1].negation = ""
                return
            negation = f"--no-{field.name.replace('_', '-')}"
            if field.default is True:  # the library added --no_x / --no-x
                main, complement = parser._actions[-2], parser._actions[-1]
            else:
                main = parser._actions[-1]
                complement = parser.add_argument(
                    f"--no_{field.name}", negation, action="store_false", dest=field.name
                )
            complement.default = argparse.SUPPRESS
            complement.help = argparse.SUPPRESS  # shown on the main flag's line
            main.negation = negation

    # -- parsing
    def valid_flags(self) -> list[str]:
        return sorted(
            {
                s
                for a in self._actions
                for s in a.option_strings
                if s.startswith("--") and "_" not in s
            }
        )

    def field_names(self) -> list[str]:
        """The names the flags and a ``--config`` file set (:func:`config_fields`)."""
        return config_fields(self.config_class)

    def build(self, values: dict[str, Any]) -> Any:
        """The config from flag values (nested configs rebuilt from their fields)."""
        return make_config(self.config_class, **values)

    def error(self, message: str):
        text = " ".join((f"{self._context}: {message}" if self._context else message).split())
        self.exit(2, f"{self.prog}: error: {text}\nsee {self.prog} --help\n")

    def _parse_strict(self, args: Sequence[str]) -> argparse.Namespace:
        ns, extra = self.parse_known_args(list(args))
        if extra:
            self.error(
                f"unrecognized arguments: {' '.join(extra)}; valid flags: "
                + " ".join(self.valid_flags())
            )
        return ns

    def file_tokens(self, data: dict[str, Any]) -> list[str]:
        """A ``--config`` mapping as the equivalent flags (unknown keys refused)."""
        names = [*self.field_names(), *sorted(self.file_keys)]
        sections = self.sections
        flat: dict[str, Any] = {}
        for key, value in data.items():  # a nested config may also be given as a mapping
            if key in self.nested and isinstance(value, dict):
                prefix = _prefix(self.config_class, key)
                flat.update({prefix(k): v for k, v in value.items()})
            elif key in sections and key not in names and isinstance(value, dict):
                bad = sorted(set(value) - set(sections[key]))
                if bad:
                    self.error(
                        f"section {key}: unknown field(s) {bad}; valid fields: "
                        + ", ".join(sections[key])
                    )
                flat.update(value)
            else:
                flat[key] = value
        unknown = sorted(set(flat) - set(names))
        if unknown:
            self.error(f"unknown field(s) {unknown}; valid fields: {', '.join(names)}")
        hints = self._hints
        tokens: list[str] = []
        for key, value in flat.items():
            flag = f"--{key}"
            hint = hints.get(key, str)  # a file key that is not a field takes one string
            if isinstance(value, dict) and _is_mapping_union(hint):
                tokens.append(f"{flag}={json.dumps(value)}")
            elif isinstance(value, list | tuple):
                tokens += [flag, *map(_text, value)]
                if typing.get_origin(_split_optional(hint)[1]) is not tuple:
                    self.error(f"{key}={value!r}: a list, but {key} takes one value")
            elif isinstance(value, dict):
                self.error(f"{key}={value!r}: a mapping, but {key} takes one value")
            else:
                tokens.append(f"{flag}={_text(value)}")
        return tokens

    def parse_config(self, argv: Sequence[str]) -> Any:
        """The config from ``--config FILE`` (if any) and the flags in ``argv``."""
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--config")
        known, rest = pre.parse_known_args(list(argv))
        file_args: list[str] = []
        if known.config:
            self._context = f"--config {known.config}"
            try:
                file_args = self.file_tokens(load_config_file(known.config))
            except ValueError as e:
                self._context = ""
                self.error(str(e))
            self._parse_strict(file_args)  # errors name the file
            self._context = ""
        ns = self._parse_strict([*file_args, *rest])
        self.namespace = ns
        values = {k: getattr(ns, k) for k in self.field_names()}
        try:
            return self.build(values)
        except ValueError as e:
            self.error(str(e))


def _prefix(cls: type, outer: str) -> Callable[[str], str]:
    """The flag name of a field of nested config ``cls.outer``: ``metadata={"prefix": "w_"}``
    on the outer field prefixes every inner name except those in ``metadata["bare"]``."""
    meta = next(f for f in dataclasses.fields(cls) if f.name == outer).metadata
    prefix, bare = meta.get("prefix", ""), tuple(meta.get("bare", ()))
    return lambda name: name if name in bare else prefix + name


def nested_flags(cls: type) -> dict[str, tuple[str, str]]:
    """``{flag name: (outer field, inner field)}`` of every nested config of ``cls``.

    A field of ``cls`` whose type is a dataclass is a nested config; its fields become flags
    under their own names (or prefixed, see :func:`_prefix`), except fields without a default
    and fields with ``metadata={"cli": False}`` (sizes the job sets from the data)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[str, str]] = {}
    for f in dataclasses.fields(cls):
        if not (f.init and dataclasses.is_dataclass(hints[f.name])):
            continue
        prefix = _prefix(cls, f.name)
        for inner in dataclasses.fields(hints[f.name]):
            has_default = not (
                inner.default is dataclasses.MISSING
                and inner.default_factory is dataclasses.MISSING
            )
            if inner.init and has_default and inner.metadata.get("cli") is not False:
                out[prefix(inner.name)] = (f.name, inner.name)
    return out


def config_fields(cls: type) -> list[str]:
    """The names a job's flags, ``--config`` file and :func:`make_config` take: its own fields
    and, for a nested config, that config's flag names (not the nested field itself)."""
    nested = nested_flags(cls)
    outers = {outer for outer, _ in nested.values()}
    own = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in outers]
    return [*own, *nested]


def make_config(cls: type[T], **values: Any) -> T:
    """``cls`` from flat names (:func:`config_fields`): a nested config's fields start from
    the outer field's default and take the values given; other names go to ``cls`` as they
    are (so unknown names are ``cls``'s own ``TypeError``)."""
    nested = nested_flags(cls)
    subs: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name in nested:
            outer, inner = nested[name]
            subs.setdefault(outer, {})[inner] = value
        else:
            kwargs[name] = value
    for f in dataclasses.fields(cls):
        if f.name in subs:
            base = kwargs.pop(f.name, None) or field_default(f)
            kwargs[f.name] = dataclasses.replace(base, **subs[f.name])
    return cls(**kwargs)


def _declaring_class(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO whose own annotations declare field ``name``."""
    for klass in cls.__mro__:
        if name in klass.__dict__.get("__annotations__", {}):
            return klass
    return None


def _comma_list(type_: Callable) -> Callable:
    def parse(s: str) -> list:
        if s.lower() in NONE_WORDS:
            return [type_(s)]
        return [type_(t) for t in s.split(",") if t.strip()]

    return _named(parse, type_.__name__)


def _text(value) -> str:
    """A YAML value as the command-line word that means it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_config(config_class: type[T], argv: Sequence[str], **kwargs) -> T:
    """``config_class`` from ``--config FILE`` plus flags (``SystemExit(2)`` on a bad one)."""
    return ConfigParser(config_class, **kwargs).parse_config(argv)
