"""The model step: prefill one request's uncached prompt suffix, or decode a batch of requests by one token.

Shapes: B batch, T new tokens, S cached + new tokens (padded to whole blocks), D hidden, V vocab.
Every step passes an explicit bool mask ``[B, 1, T, S]``: a query sees the keys of its own sequence
up to itself and nothing of the null-block padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from omni_agent.engine.input_processor import EncoderCache, prompt_embeddings
from omni_agent.engine.kv_cache import BatchKV, PagedKVCache, prompt_block_hashes
from omni_agent.engine.request import RequestState

MODALITY_TEXT = 0  # every generated token routes through the text router (``gate``)


class ModelRunner:
    """Runs the thinker over the paged KV cache.

    Args:
        thinker: the ``Thinker`` (contract in docs/interfaces.md).
        cache: the paged KV cache.
        encoder_cache: media embeddings by content hash.
    """

    def __init__(self, thinker: Any, cache: PagedKVCache, encoder_cache: EncoderCache):
        self.thinker = thinker
        self.cache = cache
        self.encoder_cache = encoder_cache
        p = next(thinker.parameters())
        self.device, self.dtype = p.device, p.dtype

    def _tables(self, states: Sequence[RequestState], kv_lens: Sequence[int]) -> torch.Tensor:
        nb = max(self.cache.blocks_for(n) for n in kv_lens)
        rows = [s.block_ids[:nb] + [0] * (nb - min(nb, len(s.block_ids))) for s in states]
        return torch.tensor(rows, dtype=torch.long, device=self.device)  # [B, nb]

    def _slots(self, state: RequestState, start: int, end: int) -> list[int]:
        bs = self.cache.block_size
        return [state.block_ids[i // bs] * bs + i % bs for i in range(start, end)]

    @torch.inference_mode()
    def prefill_batch(self, items: Sequence[tuple[RequestState, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill a chunk of each request's prompt in one forward pass (rows right-padded to the longest).

        Returns each row's last computed position's (logits [B, V], hidden [B, D]); they give the
        first token only for rows whose whole prompt is now in.
        """
        B = len(items)  # noqa: N806
        spans = [(s.num_computed, min(s.prompt_len, s.num_computed + n)) for s, n in items]
        T = max(end - start for start, end in spans)  # noqa: N806
        D = self.thinker.hidden_size  # noqa: N806
        x = torch.zeros(B, T, D, device=self.device, dtype=self.dtype)
        pos = torch.zeros(3, B, T, dtype=torch.long, device=self.device)
        mod = torch.zeros(B, T, dtype=torch.long, device=self.device)
        slots = torch.zeros(B, T, dtype=torch.long, device=self.device)
        valid = torch.zeros(B, T, dtype=torch.bool, device=self.device)
        q_pos = torch.zeros(B, T, dtype=torch.long, device=self.device)  # pad queries see key 0 only
        for b, ((state, _), (start, end)) in enumerate(zip(items, spans, strict=True)):
            prompt, n = state.request.prompt, end - start
            emb = prompt_embeddings(self.thinker, prompt, start, end, self.encoder_cache)  # [n, D]
            x[b, :n] = emb.to(self.device, self.dtype)
            pos[:, b, :n] = prompt.position_ids[:, start:end].to(self.device)
            mod[b, :n] = prompt.modality_ids[start:end].to(self.device)
            slots[b, :n] = torch.tensor(self._slots(state, start, end), device=self.device)
            valid[b, :n] = True
            q_pos[b, :n] = torch.arange(start, end, device=self.device)
        table = self._tables([s for s, _ in items], [end for _, end in spans])
        S = table.shape[1] * self.cache.block_size  # noqa: N806
        mask = torch.arange(S, device=self.device).view(1, 1, S) <= q_pos[:, :, None]  # [B, T, S]
        kv = BatchKV(self.cache, table, slots, valid)
        out = self.thinker(x, pos, mod, cache=kv, attn_mask=mask[:, None])
        last = torch.tensor([end - start - 1 for start, end in spans], device=self.device)
        rows = torch.arange(B, device=self.device)
        for (state, _), (_, end) in zip(items, spans, strict=True):
            state.num_computed = end
            self._publish(state)
        return out.logits[rows, last], out.hidden[rows, last]

    @torch.inference_mode()
    def decode(self, states: Sequence[RequestState]) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed each request's last sampled token; returns (logits [B, V], hidden [B, D])."""
        B = len(states)  # noqa: N806
        at = [s.num_computed for s in states]  # index of the token being fed
        ids = torch.tensor([[s.output_ids[-1]] for s in states], dtype=torch.long, device=self.device)
        x = self.thinker.embed_tokens(ids).to(self.dtype)  # [B, 1, D]
        at_t = torch.tensor(at, device=self.device)  # [B]
        deltas = torch.tensor([s.request.prompt.rope_delta for s in states], device=self.device)
        pos = (at_t + deltas).view(1, B, 1).expand(3, B, 1)  # [3, B, 1]: all rows advance together
        mod = torch.full((B, 1), MODALITY_TEXT, dtype=torch.long, device=self.device)
        table = self._tables(states, [a + 1 for a in at])
        slots = torch.tensor([self._slots(s, a, a + 1) for s, a in zip(states, at, strict=True)],
                             device=self.device)  # [B, 1]
        S = table.shape[1] * self.cache.block_size  # noqa: N806
        mask = torch.arange(S, device=self.device)[None] <= at_t[:, None]
        out = self.thinker(x, pos, mod, cache=BatchKV(self.cache, table, slots), attn_mask=mask[:, None, None])
        for s in states:
            s.num_computed += 1
            if s.num_computed % self.cache.block_size == 0:
                self._publish(s)
        return out.logits[:, -1], out.hidden[:, -1]

    def _publish(self, state: RequestState) -> None:
        """Hash and publish every newly full block (prompt and generated tokens alike)."""
        n_full = state.num_computed // self.cache.block_size
        if n_full <= len(state.block_hashes):
            hashes = state.block_hashes
        else:
            ids = state.request.prompt.input_ids.tolist() + state.output_ids
            hashes = prompt_block_hashes(ids[:state.num_computed], state.request.prompt.mm_items,
                                         self.cache.block_size, state.block_hashes)
            state.block_hashes = hashes
        for b in range(state.committed_blocks, n_full):
            self.cache.commit(state.block_ids[b], hashes[b])
        state.committed_blocks = max(state.committed_blocks, n_full)
