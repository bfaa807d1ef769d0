"""``omni-agent bench engine``: decode throughput under concurrency, prefix-cache TTFT gain, TTFT.

Keys:
    tok_s_c1, tok_s_c4, tok_s_c16: aggregate completion tokens/s with 1, 4, 16 concurrent greedy
        requests (wall time from submission to the last token, prompts are short).
    batching_speedup_c16: tok_s_c16 / tok_s_c1 from the same run.
    prefix_hit_speedup: TTFT of a first question about an image over TTFT of a second question about
        the same image (the processor's image preprocessing is inside both, as a client sees it).
    ttft_ms_p50: median TTFT of single-stream text requests, milliseconds.
    ttft_first_image_ms, ttft_second_image_ms: the two TTFTs behind prefix_hit_speedup.
Options (``--opt``): ``tokens=N`` completion length per request, ``image=SIDE`` image side in pixels,
``threads=N`` torch intra-op threads (default 1: the tiny model's matmuls are far too small to
split, and on a shared 2-core machine a second spinning OpenMP thread makes every step much slower).

With ``--engine vllm`` the same keys are vLLM's (the thinker in ``omni_agent_vllm.serve``, started here on
the same weights), plus ``vllm_greedy_matches_embedded`` (the bench prompts' greedy tokens, text and an
image question, equal through both engines), ``vllm_over_embedded_<key>`` ratios and the embedded
engine's own figures as ``embedded_<key>``, all from one run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from omni_agent.bench import BenchContext, benchmark


async def _one(engine: Any, rid: str, prompt: Any, max_tokens: int) -> tuple[int, float]:
    from omni_agent.engine import GenerationRequest, SamplingParams

    t0 = time.perf_counter()
    ttft, n = None, 0
    req = GenerationRequest(rid, prompt, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    async for out in engine.generate(req):
        if ttft is None and out.token_ids:
            ttft = time.perf_counter() - t0
        n += len(out.token_ids)
    return n, ttft or 0.0


async def _throughput(engine: Any, processor: Any, conc: int, tokens: int, tag: str) -> tuple[float, list[float]]:
    prompts = [processor([{"role": "user", "content": f"Tell me a story number {tag}-{i}."}]) for i in range(conc)]
    t0 = time.perf_counter()
    res = await asyncio.gather(*(_one(engine, f"{tag}-{i}", p, tokens) for i, p in enumerate(prompts)))
    wall = time.perf_counter() - t0
    return sum(n for n, _ in res) / wall, [t for _, t in res]


async def _image_ttft(engine: Any, processor: Any, side: int, question: str, rid: str) -> float:
    import numpy as np
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8))
    t0 = time.perf_counter()
    # the processor's preprocessing is CPU work a client waits for: count it, off the event loop
    prompt = await asyncio.to_thread(processor, [{"role": "user", "content": [
        {"type": "image", "image": img}, {"type": "text", "text": question}]}])
    preprocess = time.perf_counter() - t0
    _, ttft = await _one(engine, rid, prompt, 1)
    return preprocess + ttft


async def _measure(engine: Any, ctx: BenchContext, reset: Any) -> dict[str, Any]:
    """The engine keys for one started engine; ``reset()`` drops its prefix and media caches."""
    processor = engine.processor
    tokens = int(ctx.options.get("tokens", 16 if ctx.quick else 64))
    side = int(ctx.options.get("image", 448 if ctx.quick else 896))
    repeats = 1 if ctx.quick else 3
    name = "vLLM" if type(engine).__name__.startswith("Vllm") else "embedded engine"
    ctx.progress(f"warming up (text and vision paths; {name})")
    await _throughput(engine, processor, 4, 8, "warmup")
    await _image_ttft(engine, processor, 280, "warm up the vision path", "warm-img")
    rates: dict[int, float] = {}
    ttfts: list[float] = []
    for conc in (1, 4, 16):
        ctx.progress(f"decode throughput at concurrency {conc} ({repeats} run(s) of {tokens} tokens; {name})")
        best = 0.0
        for r in range(repeats):
            rate, t = await _throughput(engine, processor, conc, tokens, f"c{conc}-{r}")
            best = max(best, rate)
            if conc == 1:
                ttfts += t
        rates[conc] = best
    first, second = [], []
    ctx.progress(f"image TTFT, first question vs the same {side}px image again ({repeats} run(s); {name})")
    for r in range(repeats):
        await reset()
        first.append(await _image_ttft(engine, processor, side + 28 * r, "What is in this image?", f"i1-{r}"))
        second.append(await _image_ttft(engine, processor, side + 28 * r, "What colour dominates it?", f"i2-{r}"))
    t1, t2 = statistics.median(first), statistics.median(second)
    return {
        "tok_s_c1": round(rates[1], 1),
        "tok_s_c4": round(rates[4], 1),
        "tok_s_c16": round(rates[16], 1),
        "batching_speedup_c16": round(rates[16] / rates[1], 2),
        "prefix_hit_speedup": round(t1 / t2, 2),
        "ttft_ms_p50": round(1000 * statistics.median(ttfts), 2),
        "ttft_first_image_ms": round(1000 * t1, 2),
        "ttft_second_image_ms": round(1000 * t2, 2),
        "completion_tokens": tokens,
        "image_side": side,
    }


def _reset_embedded(engine: Any) -> Any:
    async def reset() -> None:
        engine.cache.reset_prefix_cache()
        engine.encoder_cache.items.clear()
        engine.encoder_cache.used = 0

    return reset


async def _greedy(engine: Any, prompts: list[Any], tokens: int) -> list[list[int]]:
    from omni_agent.engine import GenerationRequest, SamplingParams

    out = []
    for i, p in enumerate(prompts):
        req = GenerationRequest(f"greedy-{i}", p, SamplingParams(temperature=0.0, max_tokens=tokens))
        out.append([t async for o in engine.generate(req) for t in o.token_ids])
    return out


def _bench_prompts(processor: Any) -> list[Any]:
    """The throughput prompts plus an image question (what the greedy-equality flag covers)."""
    import numpy as np
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (280, 280, 3), dtype=np.uint8))
    texts = [processor([{"role": "user", "content": f"Tell me a story number c1-0-{i}."}]) for i in range(4)]
    return texts + [processor([{"role": "user", "content": [{"type": "image", "image": img},
                                                           {"type": "text", "text": "What is in this image?"}]}])]


async def _run(ctx: BenchContext) -> dict[str, Any]:
    import torch

    from omni_agent.engine import AsyncEngine

    threads = int(ctx.options.get("threads", 1))
    prev_threads = torch.get_num_threads()
    ctx.progress("building the thinker and the engine")
    embedded = AsyncEngine.from_settings(ctx.settings, num_threads=threads)
    await embedded.start()
    try:
        if ctx.settings.engine.backend == "vllm":
            return await _run_vllm(ctx, embedded, threads)
        return {**await _measure(embedded, ctx, _reset_embedded(embedded)), "torch_threads": threads}
    finally:
        await embedded.shutdown()
        torch.set_num_threads(prev_threads)  # the thread count is process-wide: leave it as found


async def _run_vllm(ctx: BenchContext, embedded: Any, threads: int) -> dict[str, Any]:
    """vLLM's engine keys, the greedy-equality flag and vLLM/embedded ratios, both measured in this run."""
    from omni_agent.engine.backends import engine_from_settings

    emb = await _measure(embedded, ctx, _reset_embedded(embedded))
    # starting the server (vLLM init, seconds) is blocking work: keep the event loop free
    engine = await asyncio.to_thread(engine_from_settings, ctx.settings)
    await engine.start()
    try:
        prompts = _bench_prompts(embedded.processor)
        tokens = int(ctx.options.get("tokens", 16 if ctx.quick else 64))
        matches = await _greedy(embedded, prompts, tokens) == await _greedy(engine, prompts, tokens)
        ours = await _measure(engine, ctx, engine.reset_cache)
    finally:
        await engine.shutdown()
    ratios = {f"vllm_over_embedded_{k}": round(ours[k] / emb[k], 2) if emb[k] else None
              for k in ("tok_s_c1", "tok_s_c4", "tok_s_c16", "ttft_ms_p50", "ttft_second_image_ms")}
    return {**ours, "engine": "vllm", "vllm_greedy_matches_embedded": matches, **ratios,
            **{f"embedded_{k}": v for k, v in emb.items() if k not in ("completion_tokens", "image_side")},
            "torch_threads": threads}


@benchmark("engine", "engine decode tokens/s at concurrency 1/4/16, batching speedup, prefix-cache TTFT gain")
def run(ctx: BenchContext) -> dict[str, Any]:
    return asyncio.run(_run(ctx))
