"""Fault suite, long parts (``make test-all``): the whole probe catalogue, a random fuzz of chat bodies
and sampling values, the bridge attacks, and kill -9 in the middle of a session.

Each asserts what issue 21 asks of every bad input: a clear 4xx (or error frame), no crash, no hang,
no healthy request failed beside it, bounded memory, and the sessions database intact after kill -9.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from omni_agent.bench import BenchContext
from omni_agent.bench.reliability import run_reliability
from omni_agent.engine import AsyncEngine, EngineError, GenerationRequest, SamplingParams
from omni_agent.model.processor import OmniProcessor
from omni_agent.model.thinker import Thinker
from omni_agent.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
RSS_BOUND_MB = 128  # the probes include 8 MiB bodies and 20 MiB of fuzz; growth past this is a leak


def test_reliability_probes_fuzz_bridge_and_kill9():
    result = run_reliability(BenchContext(Settings.model_validate({"engine": {"kv_cache_mb": 32}}),
                                          options={"rounds": 2, "fuzz": 150}))
    assert result["crashes"] == 0 and result["hangs"] == 0, result
    assert result["clear_errors"] == result["bad_inputs_tried"], result
    assert result["collateral_failures"] == 0 and result["healthy_requests"] > 0, result
    assert result["rss_growth_mb"] < RSS_BOUND_MB, result
    assert result["resume_ok"], result


async def test_random_sampling_values_never_hurt_other_requests():
    """200 random sampling settings (valid or not), each beside healthy greedy streams."""
    thinker, processor = Thinker.from_preset("tiny", seed=0), OmniProcessor.for_preset("tiny")
    # max_model_len bounds the runs that ask for 10**9 tokens
    engine = AsyncEngine(thinker, processor, kv_cache_mb=16, max_batch_size=16, max_model_len=64)
    rng = random.Random(0)
    values = {"temperature": [0, 1e-6, 0.7, 1e3, -1, float("inf"), float("nan")],
              "top_p": [1e-9, 0.5, 1, 0, 2, float("nan")], "top_k": [0, 1, 5, 10**9, -3],
              "repetition_penalty": [1e-300, 1e-2, 0.5, 1, 1.3, 100, 1e300, float("nan"), 0],
              "seed": [None, 0, 2**63, 2**64, -(2**63) - 1], "max_tokens": [1, 3, 10**9, 0]}

    async def run(rid: str, sp: SamplingParams) -> str:
        prompt = processor([{"role": "user", "content": rid}])
        try:
            async for out in engine.generate(GenerationRequest(rid, prompt, sp)):
                if out.finished:
                    return "ok"
        except EngineError:
            return "refused"
        return "unfinished"

    try:
        for i in range(25):
            healthy = [asyncio.create_task(run(f"ok{i}-{j}", SamplingParams(temperature=0, max_tokens=4)))
                       for j in range(4)]
            odd = [SamplingParams(**{k: rng.choice(v) for k, v in values.items()}) for _ in range(8)]
            outcomes = await asyncio.gather(*(run(f"odd{i}-{j}", sp) for j, sp in enumerate(odd)))
            assert set(outcomes) <= {"ok", "refused"}, outcomes
            assert await asyncio.gather(*healthy) == ["ok"] * 4
        assert engine.stats()["kv_blocks_used"] == 0
    finally:
        await engine.shutdown()
