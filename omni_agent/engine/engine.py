"""``AsyncEngine``: one background loop drives the model; each request streams through its own queue.

Flow of a request (vLLM v1's shape): ``generate()`` validates it and puts it in the inbox; the loop
moves it into the scheduler between steps; every step (run in a worker thread so the event loop never
blocks on the model) prefills newly admitted requests and decodes all running ones in one batch; the
outputs go back to each request's ``asyncio.Queue``. Leaving the ``generate()`` iterator early
(client gone) or calling ``abort()`` frees the request's KV blocks at the next step boundary.

Isolation: one request's failure stays with that request. Sampling parameters are validated before
admission; a batched forward pass that raises is retried row by row so only the rows that fail
alone are failed; a row whose logits are not finite, whose grammar or sampling raises, or whose
detokenizer fails gets an ``EngineError`` and is freed while the other rows take their token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from omni_agent.engine import metrics
from omni_agent.engine.input_processor import EncoderCache, check_request
from omni_agent.engine.kv_cache import PagedKVCache
from omni_agent.engine.model_runner import ModelRunner
from omni_agent.engine.output_processor import IncrementalDetokenizer, check_stop, make_output
from omni_agent.engine.request import EngineError, GenerationOutput, GenerationRequest, RequestState
from omni_agent.engine.sampler import sample, token_logprobs
from omni_agent.engine.scheduler import Scheduler

log = logging.getLogger(__name__)

TPS_SMOOTHING = 0.2  # weight of the newest step in the tokens/s moving average
PACK_MAX_TOKENS = 128  # prefill chunks up to this length share one padded forward pass


class AsyncEngine:
    """The embedded serving engine for the thinker.

    Args:
        thinker: the ``Thinker`` model.
        processor: the ``OmniProcessor`` (tokenizer, chat format).
        max_batch_size: most requests decoded together.
        kv_cache_mb: KV-cache budget (running requests plus reusable prefixes).
        max_model_len: longest prompt plus completion.
        block_size: tokens per KV block (the prefix-cache granularity).
        encoder_cache_mb: budget of the media-embedding cache.
        max_prefill_tokens: most uncached prompt tokens prefilled per step.
        num_threads: torch intra-op threads for the whole process (None leaves torch's default). Small
            models on a few shared cores run much faster with 1.
    """

    def __init__(self, thinker: Any, processor: Any, *, max_batch_size: int = 32, kv_cache_mb: float = 512,
                 max_model_len: int = 8192, block_size: int = 16, encoder_cache_mb: int = 256,
                 max_prefill_tokens: int = 4096, num_threads: int | None = None):
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.thinker = thinker.eval()
        self.processor = processor
        self.max_model_len = max_model_len
        llm = thinker.config.llm
        p = next(thinker.parameters())
        self.cache = PagedKVCache(llm.num_hidden_layers, llm.num_key_value_heads, llm.head_dim,
                                  int(kv_cache_mb * 2**20), block_size=block_size, device=p.device, dtype=p.dtype)
        self.encoder_cache = EncoderCache(encoder_cache_mb * 2**20)
        self.scheduler = Scheduler(self.cache, max_batch_size, max_prefill_tokens)
        self.runner = ModelRunner(thinker, self.cache, self.encoder_cache)
        self.vocab_size = llm.vocab_size
        self.eos_ids = {int(processor.eos_token_id)}
        self._grammar_backend: Any = None
        self._grammar_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None  # one worker thread: model steps run in order
        self._lock = threading.Lock()  # guards the inbox between the event loop and the step thread
        self._inbox: list[tuple[RequestState, int]] = []
        self._aborts: set[str] = set()
        self._states: dict[str, RequestState] = {}
        self._queues: dict[str, asyncio.Queue] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.steps = 0
        self.tokens_generated = 0
        self._tps = 0.0

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> AsyncEngine:
        """Build the thinker and processor named by ``settings.model`` and an engine around them.

        ``kwargs`` go to the constructor (``block_size``, ``num_threads``, ...).
        """
        from omni_agent.model.processor import OmniProcessor
        from omni_agent.model.thinker import Thinker

        m, e = settings.model, settings.engine
        dtype = getattr(torch, m.dtype)
        if m.path:
            thinker = Thinker.from_pretrained(m.path, device=m.device, dtype=dtype)
            processor = OmniProcessor.from_pretrained(m.path)
        else:
            thinker = Thinker.from_preset(m.preset, seed=m.seed, device=m.device, dtype=dtype)
            processor = OmniProcessor.for_preset(m.preset)
        return cls(thinker, processor, max_batch_size=e.max_batch_size, kv_cache_mb=e.kv_cache_mb,
                   max_model_len=e.max_model_len, **kwargs)

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background loop on the running event loop (idempotent).

        An engine whose loop lived on an event loop that is gone (e.g. one per test) restarts on
        the current one.
        """
        running = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._loop is running:
            return
        self._loop = running
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omni-engine")
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="omni-engine-loop")

    async def shutdown(self) -> None:
        """Stop the loop, wait for the step in flight, abort and free every request."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task  # the loop exits at its next await
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            # the worker may still be inside a model step: wait for it without blocking the event loop
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
            self._executor = None
        with self._lock:
            inbox, self._inbox, self._aborts = self._inbox, [], set()
        for state in [s for s, _ in inbox] + list(self.scheduler.running) + list(self.scheduler.waiting):
            self.scheduler.free(state)
            self._states.pop(state.request_id, None)
            state.finished, state.finish_reason, state.aborted = True, "abort", True
            q = self._queues.get(state.request_id)
            if q is not None:
                q.put_nowait(make_output(state, []))

    # --- public API -------------------------------------------------------------------------------
    def grammar_backend(self) -> Any:
        """The xgrammar backend for this tokenizer, built on first use."""
        with self._grammar_lock:
            if self._grammar_backend is None:
                from omni_agent.engine.constrained import GrammarBackend

                self._grammar_backend = GrammarBackend(self.processor.tokenizer, self.vocab_size,
                                                       sorted(self.eos_ids))
            return self._grammar_backend

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        """Stream the outputs of one request; the last one has ``finished=True``.

        Raises:
            EngineError: (``PromptTooLong``, ``CacheFull``, ``InvalidRequest``) when it cannot be served.
        """
        if self._task is None or self._task.done() or self._loop is not asyncio.get_running_loop():
            await self.start()  # first use, or a new event loop: (re)start the engine loop here
        rid = request.request_id
        if rid in self._queues:
            raise EngineError(f"request id {rid!r} is already running")
        max_tokens = check_request(request, self.max_model_len, self.cache.capacity_tokens)
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[rid] = queue  # claim the id before the first await
        submitted = finished = False
        try:
            state = RequestState(request)
            sp = request.sampling
            if sp.json_schema is not None:
                # schema compilation is CPU work (ms to 100s of ms): off the event loop
                backend = await asyncio.to_thread(self.grammar_backend)
                state.grammar = await asyncio.to_thread(backend.new_state, sp.json_schema, max_tokens)
            state.detok = IncrementalDetokenizer(self.processor.tokenizer, sp.stop, self.eos_ids)
            if sp.seed is not None:
                state.generator = torch.Generator(device=self.runner.device).manual_seed(sp.seed)
            with self._lock:
                self._inbox.append((state, max_tokens))
            submitted = True
            self._wake.set()
            while True:
                item = await queue.get()  # next delta from the engine loop (or its error)
                if isinstance(item, Exception):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._queues.pop(rid, None)
            if submitted and not finished:
                self.abort(rid)  # consumer left early (client gone, cancelled task): free the cache now

    def abort(self, request_id: str) -> None:
        """Stop a request; its blocks are freed at the next step boundary. Unknown ids are ignored."""
        with self._lock:
            self._aborts.add(request_id)
        if self._wake is not None and self._loop is not None:
            try:
                if asyncio.get_running_loop() is self._loop:
                    self._wake.set()
                    return
            except RuntimeError:
                pass
            self._loop.call_soon_threadsafe(self._wake.set)

    def stats(self) -> dict[str, Any]:
        c = self.cache
        return {
            "running": len(self.scheduler.running),
            "waiting": self.scheduler.num_waiting + len(self._inbox),
            "kv_blocks_total": c.num_blocks - 1,
            "kv_blocks_used": c.num_used_blocks,
            "kv_blocks_cached": len(c.evictable),
            "kv_evictions": c.evictions,
            "kv_block_size": c.block_size,
            "prefix_cache_queries": c.queries,
            "prefix_cache_hits": c.hits,
            "prefix_cache_hit_rate": c.hits / c.queries if c.queries else 0.0,
            "encoder_calls": self.encoder_cache.encoder_calls,
            "encoder_cache_hits": self.encoder_cache.hits,
            "steps": self.steps,
            "tokens_generated": self.tokens_generated,
            "decode_tokens_per_s": self._tps,
        }

    # --- the loop ---------------------------------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(self._inbox or self._aborts or self.scheduler.has_work())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._has_work():
                self._wake.clear()
                if not self._has_work():
                    await self._wake.wait()  # idle: sleep until generate() or abort() brings work
                continue
            try:
                # the model step is CPU/GPU heavy: run it in the worker thread so HTTP keeps serving
                outputs = await loop.run_in_executor(self._executor, self._step)
            except Exception as e:  # an engine bug outside every per-request guard: fail what ran
                log.exception("engine step failed")
                outputs = self._fail_running(e)
            for rid, item in outputs:
                q = self._queues.get(rid)
                if q is not None:
                    q.put_nowait(item)
                if isinstance(item, GenerationOutput):
                    if item.ttft_s is not None:
                        metrics.TTFT.observe(item.ttft_s)
                    if item.finished:
                        metrics.REQUESTS.labels(item.finish_reason or "stop").inc()
            self._update_gauges()

    def _update_gauges(self) -> None:
        c = self.cache
        metrics.QUEUE_DEPTH.set(self.scheduler.num_waiting + len(self._inbox))
        metrics.RUNNING.set(len(self.scheduler.running))
        metrics.PREFIX_HIT_RATE.set(c.hits / c.queries if c.queries else 0.0)
        metrics.KV_USAGE.set(c.num_used_blocks / max(1, c.num_blocks - 1))
        metrics.TOKENS_PER_SECOND.set(self._tps)

    def _fail_running(self, error: Exception) -> list[tuple[str, Any]]:
        """Last resort when a step raised outside the per-request guards: the requests that were in
        the step are failed (their state is unknown); waiting and newly arrived ones are untouched."""
        out: list[tuple[str, Any]] = []
        for state in list(self.scheduler.running):
            self._fail(state, EngineError(f"engine step failed: {error}"), out)
        return out

    def _fail(self, state: RequestState, error: Exception, outputs: list[tuple[str, Any]]) -> None:
        """Fail one request: free its blocks and send it ``error`` (an ``EngineError``)."""
        self.scheduler.free(state)
        self._states.pop(state.request_id, None)
        state.finished, state.finish_reason = True, "abort"
        if not isinstance(error, EngineError):
            error = EngineError(f"{type(error).__name__}: {error}")
        outputs.append((state.request_id, error))

    def _isolated(self, run: Any, items: list, label: str, outputs: list[tuple[str, Any]]
                  ) -> list[tuple[list, torch.Tensor, torch.Tensor]]:
        """Run a batched forward ``run(items)``; when it raises, run each item alone so only the ones
        that fail by themselves are failed. Returns ``(items, logits, hidden)`` per successful run.

        Retrying is safe: each request's progress (``num_computed``, ``committed_blocks``) is put back
        as it was before the failed run, a rerun rewrites the same KV slots, and publishing a block
        twice is a no-op.
        """
        states = [it[0] if isinstance(it, tuple) else it for it in items]
        before = [(s.num_computed, s.committed_blocks) for s in states]
        try:
            return [(items, *run(items))]
        except Exception as e:  # noqa: BLE001
            for s, (computed, committed) in zip(states, before, strict=True):
                s.num_computed, s.committed_blocks = computed, committed
            if len(items) == 1:
                log.warning("%s failed for %s: %s", label, states[0].request_id, e)
                self._fail(states[0], EngineError(f"{label} failed: {e}"), outputs)
                return []
        done: list[tuple[list, torch.Tensor, torch.Tensor]] = []
        for item in items:
            done += self._isolated(run, [item], label, outputs)
        return done

    @staticmethod
    def _prefill_groups(prefills: list[tuple[RequestState, int]]) -> list[list[tuple[RequestState, int]]]:
        """Pack short prefill chunks into shared forward passes; long ones (media) run alone.

        Rows are right-padded to the longest in a pack, so only chunks of similar, small size share.
        """
        groups: list[list[tuple[RequestState, int]]] = []
        pack: list[tuple[RequestState, int]] = []
        for item in prefills:
            if item[1] > PACK_MAX_TOKENS:
                groups.append([item])
            else:
                pack.append(item)
        if pack:
            groups.append(pack)
        return groups

    def _step(self) -> list[tuple[str, Any]]:
        """One engine step (worker thread): admit, prefill, batched decode, sample, emit."""
        t0 = time.perf_counter()
        outputs: list[tuple[str, Any]] = []
        with self._lock:
            inbox, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, set()
        for state, max_tokens in inbox:
            self._states[state.request_id] = state
            self.scheduler.add(state, max_tokens)
        for rid in aborts:
            state = self._states.pop(rid, None)
            if state is None:
                continue
            self.scheduler.free(state)
            state.finished, state.finish_reason, state.aborted = True, "abort", True
            outputs.append((rid, make_output(state, [])))
        sched = self.scheduler.schedule()
        for state, err in sched.failed:
            self._states.pop(state.request_id, None)
            outputs.append((state.request_id, err))
        rows: list[RequestState] = []
        logits_rows: list[torch.Tensor] = []
        hidden_rows: list[torch.Tensor] = []
        for group in self._prefill_groups(sched.prefills):
            for state, _ in group:
                if state.num_computed == state.cached_tokens:  # first chunk of this prompt
                    metrics.PROMPT_TOKENS.inc(state.prompt_len)
                    metrics.CACHED_PROMPT_TOKENS.inc(state.cached_tokens)
            # e.g. a media item the encoder rejects: only the request it belongs to fails
            for ran, logits, hidden in self._isolated(self.runner.prefill_batch, group, "prefill", outputs):
                for i, (state, _) in enumerate(ran):
                    if state.num_computed < state.prompt_len:
                        continue  # more chunks to go: no token yet
                    rows.append(state)
                    logits_rows.append(logits[i:i + 1])
                    hidden_rows.append(hidden[i:i + 1])
        n_decoded = 0
        if sched.decodes:
            for ran, logits, hidden in self._isolated(self.runner.decode, sched.decodes, "decode", outputs):
                rows.extend(ran)
                logits_rows.append(logits)
                hidden_rows.append(hidden)
                n_decoded += len(ran)
        if not rows:
            return outputs
        logits = torch.cat(logits_rows).float()  # [B, V]
        hidden = torch.cat(hidden_rows)  # [B, D]
        masked: list[Exception | None] = [None] * len(rows)
        for i, state in enumerate(rows):
            if state.grammar is not None:
                try:
                    state.grammar.mask(logits[i])
                except Exception as e:  # noqa: BLE001 - this request's grammar, this request's error
                    masked[i] = e
        tokens = sample(logits, rows)
        emitted = 0
        logprobs = token_logprobs(logits, rows, tokens)
        for i, (state, tok) in enumerate(zip(rows, tokens, strict=True)):
            err = masked[i] or (tok if isinstance(tok, Exception) else None)
            if err is not None:
                log.warning("request %s failed in sampling: %s", state.request_id, err)
                self._fail(state, err, outputs)
                continue
            try:
                if state.grammar is not None:
                    state.grammar.accept(tok)
                state.output_ids.append(tok)
                check_stop(state, tok, self.eos_ids, self.scheduler.max_tokens[state.request_id])
                h = hidden[i:i + 1].detach().float().cpu() if state.request.return_hidden else None
                out = make_output(state, [tok], h)
            except Exception as e:  # noqa: BLE001 - e.g. a detokenizer or grammar bug on this row
                log.warning("request %s failed after sampling: %s", state.request_id, e)
                self._fail(state, e, outputs)
                continue
            if state.finished:
                self.scheduler.free(state)
                self._states.pop(state.request_id, None)
            if logprobs[i] is not None:
                out.logprobs = [logprobs[i]]
            outputs.append((state.request_id, out))
            emitted += 1
        self.steps += 1
        self.tokens_generated += emitted
        metrics.GENERATED_TOKENS.inc(emitted)
        dt = time.perf_counter() - t0
        if n_decoded and not sched.prefills:
            self._tps = (1 - TPS_SMOOTHING) * self._tps + TPS_SMOOTHING * n_decoded / dt
        return outputs
