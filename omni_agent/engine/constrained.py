"""JSON-schema constrained decoding with xgrammar (its CPU token-bitmask path).

xgrammar compiles the schema into a pushdown automaton over the tokenizer's vocabulary; per step a
matcher fills a packed bitmask of the allowed next tokens and ``apply_token_bitmask_inplace`` sets
the rest to -inf. That alone guarantees *valid* output only if the model eventually closes the
JSON; a random-weight model would happily extend a string forever. So when a request's remaining
token budget gets short, :meth:`GrammarState.mask` also narrows the allowed set to "closing"
token (quote, brace, bracket, else comma; see ``FINISH_ORDER``) the grammar allows: every string,
array and object then closes at the first chance, numbers end, and the completion terminates well
inside ``max_tokens``. (xgrammar has no "shortest completion" mode; this keeps its masks and only narrows them.)
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any

import torch
import xgrammar as xgr

from omni_agent.engine.request import InvalidRequest

FINISH_RESERVE = 32  # fewest tokens kept back to close any open JSON before max_tokens
# Near the end of the budget the first of these the grammar allows is taken: a quote closes an open
# string (or opens an array item, which the next quote closes), braces/brackets close containers,
# a comma ends a number or an item when nothing can close yet.
FINISH_ORDER = ('"', "}", "]", ",")


class GrammarBackend:
    """Compiles schemas for one tokenizer (cached by schema text) and hands out per-request states.

    Args:
        tokenizer: the processor's HF ``tokenizers.Tokenizer``.
        vocab_size: the model's logits width (may exceed the tokenizer's vocabulary).
        stop_token_ids: tokens that end the completion once the JSON is complete.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]):
        from transformers import PreTrainedTokenizerFast

        hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self._lock = threading.Lock()
        self.finish_ids = [tid for ch in FINISH_ORDER
                           if (tid := tokenizer.token_to_id(ch)) is not None and tid < vocab_size]
        self._compile = lru_cache(maxsize=64)(self._compile_uncached)

    def _compile_uncached(self, schema_text: str) -> xgr.CompiledGrammar:
        # compact JSON only: "any whitespace" would let a random model emit blanks forever
        return self.compiler.compile_json_schema(schema_text, any_whitespace=False, strict_mode=True)

    def new_state(self, schema: dict[str, Any], max_tokens: int) -> GrammarState:
        """A fresh matcher for one request.

        Raises:
            InvalidRequest: the schema is not a JSON schema xgrammar can compile.
        """
        try:
            text = json.dumps(schema, sort_keys=True)
            with self._lock:  # the compiler and its cache are shared by the HTTP threads and the engine
                compiled = self._compile(text)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InvalidRequest(f"cannot compile JSON schema: {e}") from None
        # Budget to finish from anywhere: the schema's own text in tokens bounds the keys, enums and
        # punctuation of a minimal instance. A budget below that forces minimal JSON from the start.
        reserve = max(FINISH_RESERVE, len(self.tokenizer.encode(text, add_special_tokens=False).ids))
        return GrammarState(xgr.GrammarMatcher(compiled), self, max_tokens, reserve)


class GrammarState:
    """One request's position in its grammar."""

    def __init__(self, matcher: xgr.GrammarMatcher, backend: GrammarBackend, max_tokens: int, reserve: int):
        self.matcher = matcher
        self.reserve = reserve
        self.backend = backend
        self.max_tokens = max_tokens
        self.num_tokens = 0
        self.bitmask = xgr.allocate_token_bitmask(1, backend.vocab_size)

    @property
    def terminated(self) -> bool:
        return self.matcher.is_terminated()

    def mask(self, logits: torch.Tensor) -> None:
        """Set disallowed tokens of ``logits`` (one row ``[V]``) to -inf, in place."""
        self.matcher.fill_next_token_bitmask(self.bitmask)
        row = logits.view(1, -1)
        if row.device.type == "cpu" and row.dtype == torch.float32:
            xgr.apply_token_bitmask_inplace(row, self.bitmask, vocab_size=self.backend.vocab_size)
        else:
            tmp = row.float().cpu()
            xgr.apply_token_bitmask_inplace(tmp, self.bitmask, vocab_size=self.backend.vocab_size)
            row.copy_(tmp)
        if self.max_tokens - self.num_tokens <= self.reserve:
            # when none is allowed (a forced key, a literal) the grammar leaves few choices anyway
            for tid in self.backend.finish_ids:
                if torch.isfinite(logits[tid]):
                    logits.fill_(float("-inf"))
                    logits[tid] = 0.0
                    break

    def accept(self, token_id: int) -> bool:
        """Advance the matcher; False if the token was not allowed (should not happen)."""
        self.num_tokens += 1
        return bool(self.matcher.accept_token(token_id))
