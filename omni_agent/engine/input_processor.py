"""Input processing: validate a request, key its prompt for the prefix cache, embed what must be computed.

Media embeddings come from an LRU encoder cache keyed by content hash, so the same image or video
asked about again never re-runs its encoder, even when the prompt prefix before it differs. Media
lying entirely inside a reused KV prefix are not needed at all and get a zero stand-in.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from omni_agent.engine.kv_cache import _mm_key
from omni_agent.engine.request import GenerationRequest, InvalidRequest, PromptTooLong


def check_request(request: GenerationRequest, max_model_len: int, capacity_tokens: int) -> int:
    """Validate ``request`` and return its effective ``max_tokens`` (clamped to the model length).

    Raises:
        PromptTooLong: no room for even one generated token.
        InvalidRequest: bad sampling parameters or an empty prompt.
    """
    request.sampling.validate()
    n = int(request.prompt.input_ids.shape[0])
    if n == 0:
        raise InvalidRequest("the prompt is empty")
    limit = min(max_model_len, capacity_tokens)
    if n + 1 > limit:
        raise PromptTooLong(f"prompt has {n} tokens; this engine fits at most {limit - 1} prompt tokens "
                            f"(max_model_len {max_model_len}, KV cache {capacity_tokens} tokens)")
    return min(request.sampling.max_tokens, limit - n)


class EncoderCache:
    """LRU cache of media embeddings (``[n_tokens, D]``), keyed by content hash and layout.

    Args:
        budget_bytes: most bytes of embeddings kept.
    """

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self.items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.encoder_calls = 0
        self.hits = 0

    def get(self, key: tuple) -> torch.Tensor | None:
        emb = self.items.get(key)
        if emb is not None:
            self.items.move_to_end(key)
            self.hits += 1
        return emb

    def put(self, key: tuple, emb: torch.Tensor) -> None:
        size = emb.numel() * emb.element_size()
        if size > self.budget or key in self.items:
            return
        while self.used + size > self.budget:
            _, old = self.items.popitem(last=False)
            self.used -= old.numel() * old.element_size()
        self.items[key] = emb
        self.used += size


def prompt_embeddings(thinker: Any, prompt: Any, start: int, end: int, cache: EncoderCache) -> torch.Tensor:
    """Input embeddings ``[end - start, D]`` of prompt positions ``[start, end)`` (one prefill chunk).

    Only media overlapping the chunk are looked up or encoded; their encoder output is cached by
    content, so a later chunk (or a later prompt) with the same media skips the encoder.
    """
    mm: list[torch.Tensor | None] = []
    for item in prompt.mm_items:
        if item.offset >= end or item.offset + item.length <= start:  # not in this chunk: never read
            mm.append(None)
            continue
        k = _mm_key(item)
        key = k[:2] + k[4:]  # not the offset: the same media anywhere
        emb = cache.get(key)
        if emb is None:
            cache.encoder_calls += 1
            emb = thinker.encode_item(item)
            cache.put(key, emb.detach())
        mm.append(emb)
    return thinker.embed(prompt, mm, start, end)
