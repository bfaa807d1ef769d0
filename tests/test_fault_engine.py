"""Fault suite, issue 21 item 1: one request's failure stays with that request.

Twelve healthy greedy streams run beside each bad request; every one of them must finish with the
same tokens it gets alone, the bad one gets a clear error, and the KV cache is empty afterwards.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
import torch

from omni_agent.engine import AsyncEngine, EngineError, GenerationRequest, SamplingParams
from omni_agent.engine.request import InvalidRequest
from omni_agent.engine.sampler import apply_repetition_penalty
from omni_agent.model.processor import OmniProcessor
from omni_agent.model.thinker import Thinker

HEALTHY = 12
TOKENS = 6


@pytest.fixture(scope="module")
def tiny() -> tuple[Thinker, OmniProcessor]:
    return Thinker.from_preset("tiny", seed=0), OmniProcessor.for_preset("tiny")


@pytest.fixture
async def rig(tiny):
    """(engine, processor, the tokens each healthy prompt gets alone); the cache must end empty."""
    engine = AsyncEngine(*tiny, kv_cache_mb=8, max_batch_size=16)
    try:
        yield engine, tiny[1], await _alone(engine, tiny[1])
        assert engine.stats()["kv_blocks_used"] == 0
    finally:
        await engine.shutdown()


@dataclass
class _Unchecked(SamplingParams):
    """Sampling parameters that skip admission checks: drives a bad value into the step itself."""

    def validate(self) -> None:
        return None


async def _run(engine: AsyncEngine, rid: str, prompt, sp: SamplingParams) -> list[int]:
    ids: list[int] = []
    async for out in engine.generate(GenerationRequest(rid, prompt, sp)):
        ids += out.token_ids
    return ids


async def _beside_healthy(engine: AsyncEngine, processor, bad: SamplingParams) -> tuple[list, BaseException]:
    """Start the healthy streams, then the bad one among them; return healthy results and the bad error."""
    prompts = [processor([{"role": "user", "content": f"healthy {i}"}]) for i in range(HEALTHY)]
    healthy = [asyncio.create_task(_run(engine, f"ok{i}", p, SamplingParams(temperature=0, max_tokens=TOKENS)))
               for i, p in enumerate(prompts)]
    await asyncio.sleep(0)  # the healthy ones are admitted first, so the bad one shares their batch
    bad_prompt = processor([{"role": "user", "content": "bad request"}])
    with pytest.raises(EngineError) as info:
        await _run(engine, "bad", bad_prompt, bad)
    results = await asyncio.gather(*healthy)
    return results, info.value


async def _alone(engine: AsyncEngine, processor) -> list[list[int]]:
    return [await _run(engine, f"ref{i}", processor([{"role": "user", "content": f"healthy {i}"}]),
                       SamplingParams(temperature=0, max_tokens=TOKENS)) for i in range(HEALTHY)]


@pytest.mark.parametrize("field,value", [("repetition_penalty", 1e-300), ("repetition_penalty", float("nan")),
                                         ("temperature", float("inf")), ("top_p", float("nan")),
                                         ("seed", 2**70)])
def test_bad_sampling_values_are_refused_at_admission(field, value):
    with pytest.raises(InvalidRequest, match=field):
        SamplingParams(**{field: value}).validate()


def test_penalty_never_turns_logits_into_inf():
    row = torch.tensor([3.0e38, -3.0e38, 1.0])
    with pytest.raises(EngineError, match="overflows"):  # would double past float32's largest number
        apply_repetition_penalty(row, torch.tensor([True, True, False]), 0.5)
    with pytest.raises(EngineError, match="overflows"):  # 1e-300 (0 in float32) past admission: 1 / p is inf
        apply_repetition_penalty(torch.tensor([1.0, 2.0]), torch.tensor([True, False]), 1e-300)
    row = torch.tensor([4.0, -4.0, 1.0])
    apply_repetition_penalty(row, torch.tensor([True, True, False]), 2.0)
    assert row.tolist() == [2.0, -8.0, 1.0]


async def test_underflowing_penalty_fails_only_its_request(rig):
    engine, processor, reference = rig
    # refused before admission: clear error, nothing runs
    results, err = await _beside_healthy(engine, processor, SamplingParams(repetition_penalty=1e-300))
    assert isinstance(err, InvalidRequest) and "repetition_penalty" in str(err)
    assert results == reference
    # the same value forced past admission (the crash): the row fails, the batch lives
    results, err = await _beside_healthy(engine, processor,
                                         _Unchecked(repetition_penalty=1e-300, temperature=0, max_tokens=TOKENS))
    assert "repetition_penalty" in str(err)
    assert results == reference


async def test_non_finite_logits_fail_only_their_row(rig, monkeypatch):
    engine, processor, reference = rig
    real = engine.runner.decode

    def poisoned(states):
        logits, hidden = real(states)
        logits = logits.clone()
        for i, s in enumerate(states):
            if s.request_id == "bad":
                logits[i] = float("nan")
        return logits, hidden

    monkeypatch.setattr(engine.runner, "decode", poisoned)
    results, err = await _beside_healthy(engine, processor, SamplingParams(temperature=0, max_tokens=TOKENS))
    assert "non-finite" in str(err)
    assert results == reference


async def test_a_row_that_breaks_the_batched_forward_is_isolated(rig, monkeypatch):
    engine, processor, reference = rig
    real = engine.runner.decode
    calls = {"batched": 0}

    def fragile(states):
        out = real(states)  # the failure comes after the batch advanced: the retry must undo that
        if any(s.request_id == "bad" for s in states):
            calls["batched"] += len(states) > 1
            raise RuntimeError("simulated kernel error on one row")
        return out

    monkeypatch.setattr(engine.runner, "decode", fragile)
    results, err = await _beside_healthy(engine, processor, SamplingParams(temperature=0, max_tokens=TOKENS))
    assert "simulated kernel error" in str(err)
    assert calls["batched"] >= 1  # it really shared a batch with healthy rows
    assert results == reference
