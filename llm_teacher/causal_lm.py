"""Yes/no log-odds scoring of (user, candidate) pairs with a causal LM.

``score = log P("Yes") - log P("No")`` for the token after ``prefix + suffix``. Two paths give
the same numbers (max abs difference <= 1e-4 in fp32):

* naive: every full prompt ``ids(prefix) + ids(suffix)`` in a left-padded batch;
* shared prefix: the user's prefix runs ONCE; a copy of its key/value cache is repeated over a
  batch of right-padded candidate suffixes whose positions continue after the prefix. With P
  prefix and S suffix tokens per candidate, C candidates cost ``P + C*S`` token passes instead
  of ``C*(P+S)``. Put everything candidate-independent (the question too) in the prefix.

The shared path runs many small operations; on a CPU that other jobs also use, more torch
threads than free cores slows it down badly (threads wait on each other), so match
``torch.set_num_threads`` to the cores that are really free.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from common.config import ConfigMixin, check_device, check_int
from llm_teacher.prompts import (
    encode_prefix,
    encode_suffix,
    load_template,
    resolve_yes_no_ids,
)

logger = logging.getLogger(__name__)

Candidate = str | Mapping[str, Any]
Prefix = str | Sequence[int] | np.ndarray | torch.Tensor


class NonFiniteScoreError(ValueError):
    """A teacher score came out NaN or infinite."""


@dataclass
class CausalLMScorerConfig(ConfigMixin):
    """How a causal LM teacher scores (user, candidate) pairs."""

    batch_size: int = field(
        default=16, metadata={"help": "Prompts (naive) or candidate suffixes (shared) per forward."}
    )
    max_history_tokens: int = field(
        default=384,
        metadata={"help": "Token budget of the history block; oldest items drop first."},
    )
    template: str = field(
        default="yes_no_v1", metadata={"help": "Packaged template name or path to a .txt template."}
    )
    shared_prefix: bool = field(
        default=True, metadata={"help": "Run each user's prefix once and reuse its KV cache."}
    )
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda', 'cuda:<n>' or 'mps'."})

    def __post_init__(self) -> None:
        check_int("CausalLMScorerConfig", "batch_size", self.batch_size, 1)
        check_int("CausalLMScorerConfig", "max_history_tokens", self.max_history_tokens, 1)
        if not isinstance(self.shared_prefix, bool):
            raise ValueError(
                f"CausalLMScorerConfig.shared_prefix is {self.shared_prefix!r}; expected true/false"
            )
        if not isinstance(self.template, str) or not self.template:
            raise ValueError(
                f"CausalLMScorerConfig.template is {self.template!r}; expected a template name "
                "like 'yes_no_v1' or a path to a .txt file"
            )
        check_device("CausalLMScorerConfig", self.device)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LEFT-pad token id lists -> ``ids, attention_mask, position_ids``, each ``[B, L]``.

    Positions count real tokens only (0 at each prompt's first token), so a padded prompt sees
    the same positions as the prompt alone.
    """
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, length - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[r, length - len(p) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (padded positions are masked anyway)."""
    for pad in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if pad is not None:
            return int(pad)
    return 0


class CausalLMScorer:
    """Scores candidates for a user with a Hugging Face causal LM and a yes/no template."""

    def __init__(self, model: Any, tokenizer: Any, config: CausalLMScorerConfig | None = None):
        self.config = config or CausalLMScorerConfig()
        self.template = load_template(self.config.template)
        self.tokenizer = tokenizer
        self.model = model.to(self.config.device).eval()
        self.yes_id, self.no_id = resolve_yes_no_ids(tokenizer, self.template)
        self.pad_id = pad_token_id(tokenizer)

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)

    def info(self) -> dict[str, Any]:
        """JSON-able record of how scores were made (store it next to them)."""
        return {
            **self.template.info(),
            "yes_token_id": self.yes_id,
            "no_token_id": self.no_id,
            "scorer": self.config.to_dict(),
            "model": getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__,
        }

    # ------------------------------------------------------------------ inputs
    def render_prefix(
        self, history: Sequence[Mapping[str, Any]], user_features: Mapping[str, Any] | None = None
    ) -> str:
        """Prefix text for a user (history MOST RECENT FIRST, truncated to the token budget)."""
        return self.template.render_prefix(
            history,
            user_features,
            tokenizer=self.tokenizer,
            max_history_tokens=self.config.max_history_tokens,
        )

    def prefix_ids(self, prefix: Prefix) -> list[int]:
        """Token ids of a prefix given as text or ids."""
        if isinstance(prefix, str):
            ids = encode_prefix(self.tokenizer, prefix)
        elif isinstance(prefix, torch.Tensor):
            ids = prefix.reshape(-1).tolist()
        else:
            ids = [int(i) for i in np.asarray(prefix).reshape(-1)]
        if not ids:
            raise ValueError("prefix is empty (no tokens); render it with render_prefix()")
        return ids

    def suffix_ids(self, candidates: Sequence[Candidate]) -> list[list[int]]:
        """Token ids of each candidate's suffix (candidate text or item dict + question)."""
        texts = [self.template.render_suffix(c) for c in candidates]
        ids = encode_suffix(self.tokenizer, texts)
        for j, row in enumerate(ids):
            if not row:
                raise ValueError(f"candidate {j} ({texts[j]!r}) has an empty suffix")
        return ids

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        prefix: Prefix,
        candidates: Sequence[Candidate],
        *,
        user: Any = None,
        shared_prefix: bool | None = None,
    ) -> np.ndarray:
        """Log-odds for one user's candidates -> float32 ``[C]``.

        ``prefix`` is prefix text (from :meth:`render_prefix`) or its token ids; each candidate
        is an item dict or its text (``template.render_candidate``). ``user`` only names the
        user in errors. ``shared_prefix`` overrides the config for this call.
        """
        if len(candidates) == 0:
            return np.zeros(0, dtype=np.float32)
        shared = self.config.shared_prefix if shared_prefix is None else shared_prefix
        p_ids = self.prefix_ids(prefix)
        s_ids = self.suffix_ids(candidates)
        # Longest first: batches hold similar lengths (less padding); order restored below.
        order = sorted(range(len(s_ids)), key=lambda j: -len(s_ids[j]))
        out = np.empty(len(s_ids), dtype=np.float32)
        bs = self.config.batch_size
        with torch.inference_mode():
            cache = self._prefix_cache(p_ids) if shared else None
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                batch = [s_ids[j] for j in idx]
                if shared:
                    scores = self._score_shared(cache, len(p_ids), batch)
                else:
                    scores = self._score_naive([p_ids + s for s in batch])
                out[idx] = scores
        self._check_finite(out, user, candidates)
        return out

    def score_users(
        self,
        users: Sequence[tuple[Prefix, Sequence[Candidate]]],
        *,
        user_ids: Sequence[Any] | None = None,
        show_progress: bool = True,
    ) -> list[np.ndarray]:
        """Score many users: ``[(prefix, candidates), ...]`` -> one float32 array per user."""
        if user_ids is not None and len(user_ids) != len(users):
            raise ValueError(f"user_ids has {len(user_ids)} entries but users has {len(users)}")
        total = sum(len(c) for _, c in users)
        results = []
        with tqdm(
            total=total, unit="pair", desc="teacher scoring", disable=not show_progress
        ) as bar:
            for i, (prefix, candidates) in enumerate(users):
                name = user_ids[i] if user_ids is not None else f"#{i}"
                results.append(self.score(prefix, candidates, user=name))
                bar.update(len(candidates))
        return results

    # ------------------------------------------------------------------ internals
    def _log_odds(self, logits: torch.Tensor) -> np.ndarray:
        """``logits [B, V]`` -> ``log P(yes) - log P(no)`` as float32 ``[B]``."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        return (logp[:, self.yes_id] - logp[:, self.no_id]).cpu().numpy().astype(np.float32)

    def _score_naive(self, prompts: list[list[int]]) -> np.ndarray:
        """Full prompts, LEFT-padded: ``[B, L]`` ids, mask and positions counted over real tokens."""
        ids, mask, positions = left_pad(prompts, self.pad_id)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=False,
            logits_to_keep=1,
        )
        return self._log_odds(out.logits[:, -1, :])

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """Run the prefix ``[1, P]`` once; return its cache (a transformers ``DynamicCache``)."""
        out = self.model(
            input_ids=torch.tensor([prefix], device=self.device), use_cache=True, logits_to_keep=1
        )
        return out.cache if hasattr(out, "cache") else out.past_key_values

    def _score_shared(self, prefix_cache: Any, p_len: int, suffixes: list[list[int]]) -> np.ndarray:
        """Suffixes ``[B, S]``, right-padded, after the prefix cache repeated to batch ``B``.

        The forward pass appends the suffix keys/values to the cache it is given, so every
        batch gets its own copy of the prefix cache (``deepcopy`` + ``batch_repeat_interleave``,
        which keeps each layer's own bookkeeping, e.g. sliding windows); nothing leaks between
        batches or users. Positions continue after the prefix; the mask covers prefix + real
        suffix tokens; logits are taken at each suffix's last real token only.
        """
        b, length = len(suffixes), max(len(s) for s in suffixes)
        ids = torch.full((b, length), self.pad_id, dtype=torch.long)
        mask = torch.ones((b, p_len + length), dtype=torch.long)
        mask[:, p_len:] = 0
        for r, s in enumerate(suffixes):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, p_len : p_len + len(s)] = 1
        positions = torch.arange(p_len, p_len + length).expand(b, -1)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(b)
        last = torch.tensor([len(s) - 1 for s in suffixes]).unsqueeze(1)  # [B, 1] positions
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=last.to(self.device),
        )
        return self._log_odds(out.logits[:, 0, :])

    def _check_finite(self, scores: np.ndarray, user: Any, candidates: Sequence[Candidate]) -> None:
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            j = int(bad[0])
            cand = candidates[j]
            text = cand if isinstance(cand, str) else cand.get("title", cand)
            raise NonFiniteScoreError(
                f"non-finite log-odds {scores[j]} for user {user!r}, candidate {j} ({text!r}); "
                f"{bad.size} of {scores.size} candidates affected. Check the model weights and "
                "dtype (fp16 on CPU can overflow)"
            )
