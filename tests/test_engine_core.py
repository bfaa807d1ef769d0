"""Engine properties on the tiny thinker: batching, caching, cancellation, sampling, limits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from PIL import Image

from omni_agent.engine import AsyncEngine, GenerationRequest, PromptTooLong, SamplingParams
from omni_agent.model.processor import OmniProcessor
from omni_agent.model.thinker import DynamicCache, Thinker

GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def thinker() -> Thinker:
    return Thinker.from_preset("tiny", seed=0)


@pytest.fixture(scope="module")
def processor() -> OmniProcessor:
    return OmniProcessor.for_preset("tiny")


def make_engine(thinker, processor, **kw) -> AsyncEngine:
    kw.setdefault("kv_cache_mb", 8)
    return AsyncEngine(thinker, processor, **kw)


def text_prompt(processor, text: str):
    return processor([{"role": "user", "content": text}])


def image(seed: int = 0, size: int = 320) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


async def collect(engine, rid, prompt, **sp):
    ids, text, last, hidden = [], "", None, []
    return_hidden = sp.pop("return_hidden", False)
    req = GenerationRequest(rid, prompt, SamplingParams(**sp), return_hidden=return_hidden)
    async for out in engine.generate(req):
        ids += out.token_ids
        text += out.text
        last = out
        if out.hidden is not None:
            hidden.append(out.hidden)
    return ids, text, last, hidden


def reference_greedy(thinker, prompt, n: int, eos: int) -> tuple[list[int], torch.Tensor]:
    """Plain full-cache decoding with the thinker's own DynamicCache (no engine)."""
    cache = DynamicCache()
    with torch.no_grad():
        x = thinker.embed(prompt)[None]
        out = thinker(x, prompt.position_ids[:, None], prompt.modality_ids[None], cache=cache)
        first_hidden = out.hidden[0, -1]
        ids, T = [], len(prompt.input_ids)
        for i in range(n):
            t = int(out.logits[0, -1].argmax())
            ids.append(t)
            if t == eos:
                break
            pos = torch.full((3, 1, 1), T + i + prompt.rope_delta)
            out = thinker(thinker.embed_tokens(torch.tensor([[t]])), pos, None, cache=cache)
    return ids, first_hidden


async def test_batched_greedy_equals_one_at_a_time(thinker, processor):
    prompts = [text_prompt(processor, t) for t in
               ("hello there", "describe a red car in the city please", "x", "the cat " * 20)]
    engine = make_engine(thinker, processor)
    try:
        batched = await asyncio.gather(*(collect(engine, f"b{i}", p, max_tokens=24, **GREEDY)
                                         for i, p in enumerate(prompts)))
        assert engine.stats()["steps"] < sum(len(b[0]) for b in batched)  # really batched
        for i, p in enumerate(prompts):
            alone = await collect(engine, f"a{i}", p, max_tokens=24, **GREEDY)
            ref, _ = reference_greedy(thinker, p, 24, processor.eos_token_id)
            assert batched[i][0] == alone[0] == ref
    finally:
        await engine.shutdown()


async def test_hidden_states_streamed(thinker, processor):
    p = text_prompt(processor, "hidden states for the talker")
    engine = make_engine(thinker, processor)
    try:
        ids, _, last, hidden = await collect(engine, "h", p, max_tokens=5, return_hidden=True, **GREEDY)
        assert len(hidden) == len(ids) and all(h.shape == (1, thinker.hidden_size) for h in hidden)
        _, ref_first = reference_greedy(thinker, p, 1, processor.eos_token_id)
        torch.testing.assert_close(hidden[0][0], ref_first.float(), atol=1e-4, rtol=1e-4)
    finally:
        await engine.shutdown()


async def test_abort_and_client_leaving_free_the_cache(thinker, processor):
    engine = make_engine(thinker, processor)
    try:
        await engine.start()
        baseline = engine.stats()["kv_blocks_used"]
        assert baseline == 0
        p = text_prompt(processor, "a long story " * 10)
        # 1) the consumer leaves early (client gone)
        gen = engine.generate(GenerationRequest("gone", p, SamplingParams(max_tokens=500, **GREEDY)))
        async for _ in gen:
            assert engine.stats()["kv_blocks_used"] > baseline
            break
        await gen.aclose()
        # 2) an explicit abort while streaming
        outs = []

        async def consume():
            async for out in engine.generate(GenerationRequest("ab", p, SamplingParams(max_tokens=500, **GREEDY))):
                outs.append(out)
                if len(outs) == 2:
                    engine.abort("ab")

        await asyncio.wait_for(consume(), 10)
        assert outs[-1].finished and outs[-1].finish_reason == "abort"
        for _ in range(100):
            if engine.stats()["kv_blocks_used"] == baseline:
                break
            await asyncio.sleep(0.01)  # the loop frees aborted requests at the next step boundary
        assert engine.stats()["kv_blocks_used"] == baseline
        assert engine.stats()["running"] == 0
    finally:
        await engine.shutdown()


async def test_prefix_hit_skips_encoder_and_prefill(thinker, processor, monkeypatch):
    engine = make_engine(thinker, processor)
    calls = {"n": 0}
    real = thinker.encode_images

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(thinker, "encode_images", counting)
    img = image(1)

    def ask(q):
        return processor([{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": q}]}])

    try:
        first = await collect(engine, "q1", ask("what is in this picture?"), max_tokens=8, **GREEDY)
        assert calls["n"] == 1 and first[2].cached_tokens == 0
        second = await collect(engine, "q2", ask("and what colour is it?"), max_tokens=8, **GREEDY)
        assert calls["n"] == 1, "a prefix hit must not re-run the vision encoder"
        item = ask("x").mm_items[0]
        bs = engine.cache.block_size
        assert second[2].cached_tokens == (item.offset + item.length) // bs * bs  # every full block up to the image end
        assert engine.stats()["prefix_cache_hits"] >= 1
        # reuse must not change the answer: same question with cold caches
        engine.cache.reset_prefix_cache()
        engine.encoder_cache.items.clear()
        cold = await collect(engine, "q3", ask("and what colour is it?"), max_tokens=8, **GREEDY)
        assert cold[2].cached_tokens == 0 and cold[0] == second[0]
        # a different image with the same tokens must miss
        other = processor([{"role": "user", "content": [{"type": "image", "image": image(2)},
                                                        {"type": "text", "text": "and what colour is it?"}]}])
        miss = await collect(engine, "q4", other, max_tokens=4, **GREEDY)
        assert miss[2].cached_tokens < second[2].cached_tokens
    finally:
        await engine.shutdown()


async def test_lru_eviction_keeps_serving(thinker, processor):
    engine = make_engine(thinker, processor, kv_cache_mb=0.125)  # 15 blocks of 16 tokens
    try:
        first = text_prompt(processor, "prompt 0 " * 12)
        for i in range(8):
            _, _, last, _ = await collect(engine, f"e{i}", text_prompt(processor, f"prompt {i} " * 12),
                                          max_tokens=8, **GREEDY)
            assert last.finished
        stats = engine.stats()
        assert stats["kv_blocks_used"] == 0 and stats["kv_evictions"] > 0
        # the oldest prefix was evicted first: asking it again misses
        _, _, last, _ = await collect(engine, "again", first, max_tokens=2, **GREEDY)
        assert last.cached_tokens == 0
    finally:
        await engine.shutdown()


async def test_prompt_too_long_is_refused(thinker, processor):
    engine = make_engine(thinker, processor, max_model_len=32)
    try:
        with pytest.raises(PromptTooLong):
            await collect(engine, "long", text_prompt(processor, "word " * 100), max_tokens=4)
        # and the engine still serves
        _, _, last, _ = await collect(engine, "ok", text_prompt(processor, "hi"), max_tokens=4)
        assert last.finished
    finally:
        await engine.shutdown()


async def test_sampling_params_honoured(thinker, processor):
    engine = make_engine(thinker, processor)
    p = text_prompt(processor, "tell me something")
    try:
        # seed: reproducible, even when batched with other requests
        a, b, c, _ = await asyncio.gather(
            collect(engine, "s1", p, max_tokens=16, seed=7, temperature=1.0, top_p=0.9, top_k=50),
            collect(engine, "s2", p, max_tokens=16, seed=8, temperature=1.0, top_p=0.9, top_k=50),
            collect(engine, "s3", p, max_tokens=16, seed=7, temperature=1.0, top_p=0.9, top_k=50),
            collect(engine, "other", text_prompt(processor, "noise"), max_tokens=10, temperature=1.0),
        )
        assert a[0] == c[0] and a[0] != b[0]
        alone = await collect(engine, "s4", p, max_tokens=16, seed=7, temperature=1.0, top_p=0.9, top_k=50)
        assert alone[0] == a[0]
        # max_tokens
        ids, _, last, _ = await collect(engine, "m", p, max_tokens=5, **GREEDY)
        assert len(ids) == 5 and last.finish_reason == "length" and last.completion_tokens == 5
        # stop strings: cut before the stop string, finish_reason stop
        full_ids, full, _, _ = await collect(engine, "f", p, max_tokens=30, **GREEDY)
        stop = full[len(full) // 2:len(full) // 2 + 2]
        cut_at = full.find(stop)
        _, text, last, _ = await collect(engine, "st", p, max_tokens=30, stop=[stop], **GREEDY)
        assert last.finish_reason == "stop" and text == full[:cut_at]
        # stop token ids
        ids, _, last, _ = await collect(engine, "sid", p, max_tokens=30, stop_token_ids=[full_ids[3]], **GREEDY)
        assert last.finish_reason == "stop" and ids == full_ids[:full_ids.index(full_ids[3]) + 1]
        # repetition penalty changes greedy output on a repetitive prompt
        rep = text_prompt(processor, "the cat " * 10)
        plain = await collect(engine, "r0", rep, max_tokens=20, **GREEDY)
        pen = await collect(engine, "r1", rep, max_tokens=20, repetition_penalty=1.5, **GREEDY)
        assert plain[0] != pen[0]
    finally:
        await engine.shutdown()


async def test_fifty_concurrent_requests(thinker, processor):
    engine = make_engine(thinker, processor, max_batch_size=16)
    try:
        res = await asyncio.wait_for(asyncio.gather(*(
            collect(engine, f"c{i}", text_prompt(processor, f"question {i}"), max_tokens=6, **GREEDY)
            for i in range(50))), 60)
        assert all(r[2].finished for r in res)
        assert engine.stats()["kv_blocks_used"] == 0
    finally:
        await engine.shutdown()


def test_engine_survives_a_new_event_loop(thinker, processor):
    """Callers that run one event loop per task (tests, scripts) can reuse one engine."""
    engine = make_engine(thinker, processor)
    p = text_prompt(processor, "again")
    first = asyncio.run(collect(engine, "l1", p, max_tokens=4, **GREEDY))
    second = asyncio.run(collect(engine, "l2", p, max_tokens=4, **GREEDY))
    assert first[0] == second[0]
    asyncio.run(engine.shutdown())


async def test_requests_beyond_the_cache_wait_their_turn(thinker, processor):
    engine = make_engine(thinker, processor, kv_cache_mb=0.125)  # 15 blocks of 16 tokens of tiny KV
    per_request = engine.cache.blocks_for(len(text_prompt(processor, "q 0")) + 60)
    assert 8 * per_request > 2 * engine.cache.num_blocks  # at most half of them fit at once
    try:
        res = await asyncio.wait_for(asyncio.gather(*(
            collect(engine, f"w{i}", text_prompt(processor, f"q {i}"), max_tokens=60, **GREEDY)
            for i in range(8))), 120)
        assert all(r[2].finished for r in res)
        assert engine.stats()["kv_blocks_used"] == 0
    finally:
        await engine.shutdown()


async def test_chunked_prefill_matches_one_shot(thinker, processor):
    img_prompt = processor([{"role": "user", "content": [{"type": "image", "image": image(3)},
                                                         {"type": "text", "text": "describe it"}]}])
    whole = make_engine(thinker, processor)
    chunked = make_engine(thinker, processor, max_prefill_tokens=24)  # the prompt takes ~6 steps
    try:
        ref = await collect(whole, "w", img_prompt, max_tokens=6, **GREEDY)
        short = text_prompt(processor, "a short one")
        got, other = await asyncio.gather(collect(chunked, "c", img_prompt, max_tokens=6, **GREEDY),
                                          collect(chunked, "s", short, max_tokens=6, **GREEDY))
        assert got[0] == ref[0]
        assert other[0] == (await collect(whole, "s2", short, max_tokens=6, **GREEDY))[0]
    finally:
        await whole.shutdown()
        await chunked.shutdown()


def test_packed_prefill_equals_separate_prefills(thinker, processor):
    from omni_agent.engine.request import RequestState

    prompts = [text_prompt(processor, t) for t in ("short", "a somewhat longer prompt " * 3, "mid length one")]

    def run(groups):
        engine = make_engine(thinker, processor)
        states = []
        for i, p in enumerate(prompts):
            s = RequestState(GenerationRequest(f"p{i}", p, SamplingParams(max_tokens=4)))
            engine.scheduler.add(s, 4)
            states.append(s)
        engine.scheduler.schedule()
        out = []
        for g in groups:
            logits, _ = engine.runner.prefill_batch([(states[i], states[i].prompt_len) for i in g])
            out += list(logits)
        return out

    packed = run([[0, 1, 2]])
    alone = run([[0], [1], [2]])
    for a, b in zip(packed, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


async def test_a_failing_model_step_fails_its_requests_not_the_engine(thinker, processor, monkeypatch):
    from omni_agent.engine import EngineError

    engine = make_engine(thinker, processor)
    p = text_prompt(processor, "boom")
    try:
        real = engine.runner.decode

        def broken(states):
            raise RuntimeError("simulated device error")

        monkeypatch.setattr(engine.runner, "decode", broken)
        with pytest.raises(EngineError, match="simulated device error"):
            await collect(engine, "b1", p, max_tokens=4, **GREEDY)
        assert engine.stats()["kv_blocks_used"] == 0
        monkeypatch.setattr(engine.runner, "decode", real)
        _, _, last, _ = await collect(engine, "b2", p, max_tokens=4, **GREEDY)
        assert last.finished
    finally:
        await engine.shutdown()
