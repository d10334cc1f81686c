"""Prompt templates kept as data: ``llm_teacher/templates/<name>.txt``.

A template renders a user's *prefix* (who the user is and what they watched) and a candidate
*suffix* (the candidate item and the yes/no question). The full prompt is ``prefix + suffix`` and
the next token after it is the answer word. Token ids are built as
``ids(prefix) + ids(suffix)``, each tokenized on its own (:func:`encode_prefix`,
:func:`encode_suffix`), so the prefix is an exact token prefix of every prompt of that user and
its key/value cache can be shared (see :mod:`llm_teacher.causal_lm`).

History items are dicts ``{"title": str, "year": int | None, "genres": list[str],
"rating": float | None}``, MOST RECENT FIRST. The prompt lists the kept items oldest first so the
most recent one sits next to the candidate. An empty history is rendered with the template's
``empty_history`` section (a documented "no history yet" line), never an error, so cold-start
users can still be scored.
"""

from __future__ import annotations

import hashlib
import logging
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"

# section name -> (required placeholders, allowed placeholders)
_SECTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "prefix": (frozenset({"history"}), frozenset({"history", "user"})),
    "suffix": (frozenset({"candidate"}), frozenset({"candidate"})),
    "history_line": (frozenset({"item"}), frozenset({"item", "rating"})),
    "rating": (frozenset({"rating"}), frozenset({"rating"})),
    "empty_history": (frozenset(), frozenset()),
    "item": (frozenset({"title"}), frozenset({"title", "year", "genres"})),
}
_HEADER_KEYS = ("name", "version", "yes", "no")


def _placeholders(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed, versioned prompt template; ``template_hash`` is the sha256 of the file text."""

    name: str
    version: int
    yes: str
    no: str
    sections: Mapping[str, str] = field(repr=False)
    text: str = field(repr=False)
    source: str = ""

    @property
    def id(self) -> str:
        """``<name>_v<version>``, e.g. ``yes_no_v1``."""
        return f"{self.name}_v{self.version}"

    @property
    def template_hash(self) -> str:
        """sha256 hex digest of the template file text (record it next to every score)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def info(self) -> dict[str, Any]:
        """JSON-able identity of the template, to store in artifacts."""
        return {
            "template": self.id,
            "template_name": self.name,
            "template_version": self.version,
            "template_hash": self.template_hash,
        }

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> PromptTemplate:
        """Parse template text (see ``templates/yes_no_v1.txt`` for the format)."""
        header: dict[str, str] = {}
        sections: dict[str, list[str]] = {}
        current: str | None = None
        for lineno, line in enumerate(text.split("\n"), start=1):
            stripped = line.strip()
            if stripped.startswith("===") and stripped.endswith("===") and len(stripped) > 6:
                current = stripped.strip("=").strip()
                if current not in _SECTIONS:
                    raise ValueError(
                        f"{source}:{lineno}: unknown section {current!r}; "
                        f"expected one of {sorted(_SECTIONS)}"
                    )
                if current in sections:
                    raise ValueError(f"{source}:{lineno}: section {current!r} appears twice")
                sections[current] = []
            elif current is not None:
                sections[current].append(line)
            elif stripped and not stripped.startswith("#"):
                key, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(
                        f"{source}:{lineno}: header line {line!r} is not 'key: value' "
                        "(comments start with '#', sections with '=== name ===')"
                    )
                header[key.strip()] = value.strip()
        missing = [k for k in _HEADER_KEYS if k not in header]
        if missing:
            raise ValueError(
                f"{source}: header is missing {missing}; required keys: {_HEADER_KEYS}"
            )
        try:
            version = int(header["version"])
        except ValueError:
            raise ValueError(
                f"{source}: header 'version' is {header['version']!r}; expected an integer"
            ) from None
        missing_sections = [s for s in _SECTIONS if s not in sections]
        if missing_sections:
            raise ValueError(
                f"{source}: missing sections {missing_sections}; required: {sorted(_SECTIONS)}"
            )
        # Lines between markers joined by "\n"; the break before the next marker is not content.
        bodies = {}
        for name, lines in sections.items():
            if text.endswith("\n") and name == list(sections)[-1] and lines and lines[-1] == "":
                lines = lines[:-1]  # the file's own final newline
            bodies[name] = "\n".join(lines)
        for name, body in bodies.items():
            required, allowed = _SECTIONS[name]
            try:
                found = _placeholders(body)
            except ValueError as err:
                raise ValueError(
                    f"{source}: section {name!r} is not a valid format: {err}"
                ) from err
            if found - allowed or required - found:
                raise ValueError(
                    f"{source}: section {name!r} has placeholders {sorted(found)}; "
                    f"it must use {sorted(required)} and may use {sorted(allowed)}"
                )
        if header["yes"] == header["no"] or not header["yes"] or not header["no"]:
            raise ValueError(
                f"{source}: answer words yes={header['yes']!r} no={header['no']!r} must be "
                "two different non-empty words"
            )
        return cls(
            name=header["name"],
            version=version,
            yes=header["yes"],
            no=header["no"],
            sections=bodies,
            text=text,
            source=source,
        )

    # ---------------------------------------------------------------- rendering
    def render_item(self, item: Mapping[str, Any], where: str = "item") -> str:
        """One item as text: title, year, genres (no rating)."""
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected a dict with 'title', got {type(item).__name__}")
        title = item.get("title")
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"{where}: 'title' is {title!r}; expected a non-empty string")
        title = title.strip()
        year_text = _year_text(item.get("year"), where)
        if year_text != "year unknown" and title.endswith(f"({year_text})"):
            title = title[: -len(f"({year_text})")].rstrip()  # MovieLens titles carry the year
        genres = item.get("genres")
        if genres is None:
            genres = []
        elif isinstance(genres, str):
            genres = [genres]
        genres = [str(g) for g in genres if str(g).strip()]
        genres_text = ", ".join(genres) if genres else "unknown"
        return self.sections["item"].format(title=title, year=year_text, genres=genres_text)

    def render_candidate(self, item: Mapping[str, Any]) -> str:
        """The candidate item's text (what fills ``{candidate}`` in the suffix)."""
        return self.render_item(item, where="candidate")

    def render_suffix(self, candidate: str | Mapping[str, Any]) -> str:
        """Suffix = candidate section + question; ``candidate`` is an item dict or its text."""
        text = candidate if isinstance(candidate, str) else self.render_candidate(candidate)
        return self.sections["suffix"].format(candidate=text)

    def render_user(self, user_features: Mapping[str, Any] | None) -> str:
        """``key: value`` pairs in the given order; ``unknown`` when there are none."""
        if not user_features:
            return "unknown"
        parts = [f"{k}: {v}" for k, v in user_features.items() if v is not None and v != ""]
        return ", ".join(parts) if parts else "unknown"

    def _history_line(self, item: Mapping[str, Any], index: int) -> str:
        where = f"history[{index}]"
        rating = item.get("rating") if isinstance(item, Mapping) else None
        rating_text = ""
        if rating is not None:
            try:
                value = float(rating)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{where}: 'rating' is {rating!r}; expected a number or None"
                ) from None
            if not math.isnan(value):  # NaN = not rated, like None
                rating_text = self.sections["rating"].format(rating=f"{value:g}")
        return self.sections["history_line"].format(
            item=self.render_item(item, where=where), rating=rating_text
        )

    def render_prefix(
        self,
        history: Sequence[Mapping[str, Any]],
        user_features: Mapping[str, Any] | None = None,
        *,
        tokenizer: Any = None,
        max_history_tokens: int | None = None,
    ) -> str:
        """Render the user's prefix.

        ``history`` is MOST RECENT FIRST. With ``tokenizer`` and ``max_history_tokens`` the
        oldest items are dropped until the rendered history block fits the token budget; the kept
        items are listed oldest first. Empty history -> the ``empty_history`` line.
        """
        lines = [self._history_line(item, i) for i, item in enumerate(history)]
        n_keep = len(lines)
        if lines and max_history_tokens is not None:
            if tokenizer is None:
                raise ValueError(
                    "max_history_tokens is set but no tokenizer was given to count tokens"
                )
            n_keep = _fit_budget(lines, tokenizer, max_history_tokens)
            if n_keep < len(lines):
                logger.debug("history truncated from %d to %d items", len(lines), n_keep)
        kept = lines[:n_keep][::-1]  # oldest first
        block = "\n".join(kept) if kept else self.sections["empty_history"]
        return self.sections["prefix"].format(history=block, user=self.render_user(user_features))

    def render_prompt(
        self,
        history: Sequence[Mapping[str, Any]],
        user_features: Mapping[str, Any] | None,
        candidate: str | Mapping[str, Any],
        **kwargs: Any,
    ) -> str:
        """Full prompt text = prefix + suffix (for display; score with token ids)."""
        return self.render_prefix(history, user_features, **kwargs) + self.render_suffix(candidate)


def _year_text(year: Any, where: str) -> str:
    """``1995``, ``1995.0`` or ``"1995"`` -> ``"1995"``; None, NaN or "" -> ``"year unknown"``."""
    if year is None or (isinstance(year, str) and not year.strip()):
        return "year unknown"
    try:
        value = float(year)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'year' is {year!r}; expected a number or None") from None
    if math.isnan(value):
        return "year unknown"
    return str(int(value)) if value.is_integer() else str(year)


def _count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _fit_budget(lines: list[str], tokenizer: Any, budget: int) -> int:
    """Largest n such that the block of the n most recent lines (oldest first) fits ``budget``."""
    if budget < 1:
        raise ValueError(f"max_history_tokens is {budget}; expected an integer >= 1")
    sizes = _count_tokens(tokenizer, lines)
    total, n = 0, 0
    for size in sizes:
        if total + size > budget:
            break
        total, n = total + size, n + 1
    # Line sizes are an estimate of the joined block; check exactly, dropping the oldest.
    while n > 0 and _count_tokens(tokenizer, ["\n".join(lines[:n][::-1])])[0] > budget:
        n -= 1
    if n == 0:
        raise ValueError(
            f"max_history_tokens={budget} cannot hold even the most recent history item "
            f"({sizes[0]} tokens: {lines[0]!r}); raise max_history_tokens"
        )
    return n


def load_template(name_or_path: str | Path = "yes_no_v1") -> PromptTemplate:
    """Load a packaged template by name (``yes_no_v1``) or a template file by path."""
    path = Path(name_or_path)
    if path.suffix != ".txt":
        path = TEMPLATES_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in TEMPLATES_DIR.glob("*.txt"))
        raise ValueError(
            f"template {str(name_or_path)!r} not found (looked for {path}); "
            f"packaged templates: {available}, or give a path to a .txt template file"
        )
    return PromptTemplate.from_text(path.read_text(encoding="utf-8"), source=str(path))


def leading_special_ids(tokenizer: Any) -> list[int]:
    """Ids the tokenizer puts before the text (e.g. BOS) when adding special tokens."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return list(with_special[:start])
    return []


def encode_prefix(tokenizer: Any, prefix: str) -> list[int]:
    """Prefix token ids: leading special tokens (BOS, if the tokenizer adds one) + the text."""
    return leading_special_ids(tokenizer) + list(
        tokenizer(prefix, add_special_tokens=False)["input_ids"]
    )


def encode_suffix(tokenizer: Any, suffixes: Sequence[str]) -> list[list[int]]:
    """Suffix token ids, each tokenized on its own (no special tokens)."""
    if not suffixes:
        return []
    return [list(ids) for ids in tokenizer(list(suffixes), add_special_tokens=False)["input_ids"]]


def resolve_yes_no_ids(
    tokenizer: Any, template: PromptTemplate | str = "yes_no_v1"
) -> tuple[int, int]:
    """Single token ids of the template's answer words as they follow the prompt.

    Tries the word with and without a leading space (a BPE tokenizer usually writes ``" Yes"``
    after ``"Answer:"``); a variant counts when appending it to the question adds exactly one
    token, or else when it is one token on its own. Raises ``ValueError`` if either word has no
    single-token form or both resolve to the same id.
    """
    if isinstance(template, str):
        template = load_template(template)
    tail = template.sections["suffix"].format(candidate="x")
    tail_ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"])
    prefer_space = not tail[-1:].isspace()

    def resolve(word: str) -> int:
        variants = [" " + word, word] if prefer_space else [word, " " + word]
        tried = []
        for variant in variants:
            ids = list(tokenizer(tail + variant, add_special_tokens=False)["input_ids"])
            if len(ids) == len(tail_ids) + 1 and ids[: len(tail_ids)] == tail_ids:
                return ids[-1]
            tried.append((variant, ids[len(tail_ids) :]))
        for variant in variants:
            alone = list(tokenizer(variant, add_special_tokens=False)["input_ids"])
            if len(alone) == 1:
                return alone[0]
            tried.append((variant, alone))
        raise ValueError(
            f"answer word {word!r} of template {template.id} is not a single token for this "
            f"tokenizer (tried {tried}); use a template whose answer words are single tokens"
        )

    yes_id, no_id = resolve(template.yes), resolve(template.no)
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in (yes_id, no_id):
        raise ValueError(
            f"answer words {template.yes!r}/{template.no!r} map to the unknown token {unk}; "
            "the tokenizer's vocabulary lacks them"
        )
    if yes_id == no_id:
        raise ValueError(
            f"answer words {template.yes!r} and {template.no!r} map to the same token id {yes_id}"
        )
    return yes_id, no_id
