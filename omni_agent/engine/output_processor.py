"""Output processing: incremental detokenisation, stop checks and the per-step output deltas."""

from __future__ import annotations

import time
from typing import Any

from omni_agent.engine.request import GenerationOutput, RequestState

UNFINISHED_CHAR = "\ufffd"  # what a byte-level tokenizer decodes half of a multi-byte character to


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas (vLLM's prefix/read offset scheme).

    Only a short window of recent tokens is decoded per step, and text is held back while it ends
    in an incomplete UTF-8 sequence, or while it could still turn into one of the stop strings.
    """

    def __init__(self, tokenizer: Any, stop: list[str], skip_ids: set[int]):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.skip_ids = skip_ids
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""  # all text decoded so far
        self.sent = 0  # characters of ``text`` already emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> bool:
        """Add one token; True when a stop string now appears (the text is cut before it)."""
        if token_id in self.skip_ids:
            return False
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith(UNFINISHED_CHAR):
            new = full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            start = max(0, len(self.text) - self.hold)
            self.text += new
            for s in self.stop:
                at = self.text.find(s, start)
                if at != -1:
                    self.text = self.text[:at]
                    return True
        return False

    def delta(self, final: bool) -> str:
        """Text not yet emitted; while running, keep back what could be the start of a stop string."""
        if final and self.read_offset < len(self.ids):  # flush a trailing incomplete character as is
            prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
            self.text += self._decode(self.ids[self.prefix_offset:])[len(prefix):]
            self.read_offset = len(self.ids)
        end = len(self.text) if final else max(self.sent, len(self.text) - self.hold)
        out = self.text[self.sent:end]
        self.sent = end
        return out


def make_output(state: RequestState, new_ids: list[int], hidden: Any = None) -> GenerationOutput:
    """The delta for one request after one step."""
    ttft = None
    if state.first_token_time is not None and len(state.output_ids) == len(new_ids):
        ttft = state.first_token_time - state.arrival
    return GenerationOutput(
        request_id=state.request_id,
        token_ids=new_ids,
        text=state.detok.delta(final=state.finished) if state.detok is not None else "",
        hidden=hidden,
        finished=state.finished,
        finish_reason=state.finish_reason,
        prompt_tokens=state.prompt_len,
        completion_tokens=len(state.output_ids),
        cached_tokens=state.cached_tokens,
        ttft_s=ttft,
    )


def check_stop(state: RequestState, token_id: int, eos_ids: set[int], max_tokens: int) -> None:
    """Update ``state.finished`` / ``finish_reason`` after ``token_id`` was appended."""
    sp = state.request.sampling
    hit_stop_string = state.detok.push(token_id) if state.detok is not None else False
    if state.first_token_time is None:
        state.first_token_time = time.perf_counter()
    if token_id in eos_ids or token_id in sp.stop_token_ids or hit_stop_string:
        state.finished, state.finish_reason = True, "stop"
    elif state.grammar is not None and state.grammar.terminated:
        state.finished, state.finish_reason = True, "stop"
    elif len(state.output_ids) >= max_tokens:
        state.finished, state.finish_reason = True, "length"
