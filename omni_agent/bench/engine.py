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


async def _run(ctx: BenchContext) -> dict[str, Any]:
    import torch

    from omni_agent.engine import AsyncEngine

    tokens = int(ctx.options.get("tokens", 16 if ctx.quick else 64))
    side = int(ctx.options.get("image", 448 if ctx.quick else 896))
    repeats = 1 if ctx.quick else 3
    threads = int(ctx.options.get("threads", 1))
    prev_threads = torch.get_num_threads()
    ctx.progress("building the thinker and the engine")
    engine = AsyncEngine.from_settings(ctx.settings, num_threads=threads)
    processor = engine.processor
    await engine.start()
    try:
        ctx.progress("warming up (text and vision paths)")
        await _throughput(engine, processor, 4, 8, "warmup")
        await _image_ttft(engine, processor, 280, "warm up the vision path", "warm-img")
        rates: dict[int, float] = {}
        ttfts: list[float] = []
        for conc in (1, 4, 16):
            ctx.progress(f"decode throughput at concurrency {conc} ({repeats} run(s) of {tokens} tokens)")
            best = 0.0
            for r in range(repeats):
                rate, t = await _throughput(engine, processor, conc, tokens, f"c{conc}-{r}")
                best = max(best, rate)
                if conc == 1:
                    ttfts += t
            rates[conc] = best
        first, second = [], []
        ctx.progress(f"image TTFT: first question vs the same {side}px image again ({repeats} run(s))")
        for r in range(repeats):
            engine.cache.reset_prefix_cache()
            engine.encoder_cache.items.clear()
            engine.encoder_cache.used = 0
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
            "torch_threads": threads,
        }
    finally:
        await engine.shutdown()
        torch.set_num_threads(prev_threads)  # the thread count is process-wide: leave it as found


@benchmark("engine", "engine decode tokens/s at concurrency 1/4/16, batching speedup, prefix-cache TTFT gain")
def run(ctx: BenchContext) -> dict[str, Any]:
    return asyncio.run(_run(ctx))
