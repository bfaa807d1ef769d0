"""Scheduling: which requests prefill and which decode in the next model step (continuous batching).

Each step the scheduler first continues chunked prefills, then admits waiting requests (FCFS) while
there is batch room, a prefill token budget left and KV blocks to hold the request's whole prompt
plus completion, then runs every decoding request together in one batch. A prompt longer than the
per-step prefill budget is prefilled in chunks over several steps, so a long video prompt delays the
running decodes (voice sessions) by one chunk per step, not by its whole prefill. Reserving the completion's blocks at admission
means a running request never stalls or gets preempted for memory; a request that cannot fit even
in an empty cache is refused with ``CacheFull`` rather than waiting forever.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from omni_agent.engine.kv_cache import PagedKVCache, prompt_block_hashes
from omni_agent.engine.request import CacheFull, RequestState


@dataclass
class SchedulerOutput:
    prefills: list[tuple[RequestState, int]] = field(default_factory=list)
    """Requests to prefill this step and how many prompt tokens of each (a chunk of a long prompt)."""
    decodes: list[RequestState] = field(default_factory=list)
    failed: list[tuple[RequestState, Exception]] = field(default_factory=list)


class Scheduler:
    """FCFS admission plus one batched decode per step.

    Args:
        cache: the paged KV cache (blocks are allocated and freed here).
        max_batch_size: most running requests.
        max_prefill_tokens: most uncached prompt tokens prefilled in one step (at least one request).
    """

    def __init__(self, cache: PagedKVCache, max_batch_size: int, max_prefill_tokens: int = 4096):
        self.cache = cache
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[RequestState] = deque()
        self.running: list[RequestState] = []
        self.max_tokens: dict[str, int] = {}

    def add(self, state: RequestState, max_tokens: int) -> None:
        self.max_tokens[state.request_id] = max_tokens
        self.waiting.append(state)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _admit(self, state: RequestState) -> int:
        """Take prefix blocks and allocate the rest; returns prompt tokens still to compute."""
        c = self.cache
        prompt, n = state.request.prompt, state.prompt_len
        if not state.block_hashes:  # once per request, not again while it waits for room
            state.block_hashes = prompt_block_hashes(prompt.input_ids.tolist(), prompt.mm_items, c.block_size)
        c.queries += 1
        # at least the last prompt token must run through the model to give the first logits
        usable = (n - 1) // c.block_size
        cached = c.lookup(state.block_hashes[:usable])
        total = c.blocks_for(n + self.max_tokens[state.request_id])
        state.block_ids = c.acquire(cached, total - len(cached))
        if cached:
            c.hits += 1
        state.num_computed = state.cached_tokens = len(cached) * c.block_size
        return n - state.num_computed

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput(decodes=[s for s in self.running if s.output_ids and not s.finished])
        budget = self.max_prefill_tokens
        for state in self.running:  # chunked prefills in progress go first
            left = state.prompt_len - state.num_computed
            if left > 0 and budget > 0:
                out.prefills.append((state, min(left, budget)))
                budget -= min(left, budget)
        while self.waiting and len(self.running) < self.max_batch_size and budget > 0:
            state = self.waiting[0]
            try:
                todo = self._admit(state)
            except CacheFull as e:
                need = self.cache.blocks_for(state.prompt_len + self.max_tokens[state.request_id])
                if not self.running:
                    self.waiting.popleft()  # could never fit, even alone
                    out.failed.append((state, CacheFull(f"{e}; this request needs {need} blocks, "
                                                        f"the whole cache has {self.cache.num_blocks - 1}")))
                    continue
                break  # wait for running requests to finish and free their blocks
            self.waiting.popleft()
            self.running.append(state)
            out.prefills.append((state, min(todo, budget)))
            budget -= min(todo, budget)
        return out

    def free(self, state: RequestState) -> None:
        """Release a finished or aborted request's blocks (its published prefix stays reusable)."""
        if state in self.running:
            self.running.remove(state)
        elif state in self.waiting:
            self.waiting.remove(state)
        if state.block_ids:
            self.cache.release(state.block_ids)
            state.block_ids = []
        self.max_tokens.pop(state.request_id, None)
