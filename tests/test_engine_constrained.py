"""JSON-schema constrained decoding: random weights still produce valid JSON matching the schema."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from omni_agent.engine import AsyncEngine, GenerationRequest, InvalidRequest, SamplingParams
from omni_agent.model.processor import OmniProcessor
from omni_agent.model.thinker import Thinker


class Weather(BaseModel):
    city: str
    days: int = Field(ge=-10**9)
    unit: Literal["celsius", "fahrenheit"]
    hourly: bool
    tags: list[str]


@pytest.fixture(scope="module")
def engine_parts():
    return Thinker.from_preset("tiny", seed=0), OmniProcessor.for_preset("tiny")


async def run(engine, rid, prompt, sp):
    text, last = "", None
    async for out in engine.generate(GenerationRequest(rid, prompt, sp)):
        text += out.text
        last = out
    return text, last


async def test_random_weights_give_schema_valid_json(engine_parts):
    thinker, processor = engine_parts
    engine = AsyncEngine(thinker, processor, kv_cache_mb=8)
    schema = Weather.model_json_schema()
    prompt = processor([{"role": "user", "content": "weather in Paris?"}])
    try:
        results = await asyncio.gather(*(
            run(engine, f"j{seed}", prompt, SamplingParams(temperature=1.0, seed=seed, max_tokens=256,
                                                           json_schema=schema))
            for seed in range(4)))
        for text, last in results:
            assert last.finish_reason == "stop", text
            Weather.model_validate(json.loads(text))
        # greedy too, and a schema mixed into a batch with an unconstrained request
        free, (text, _) = await asyncio.gather(
            run(engine, "free", prompt, SamplingParams(temperature=0, max_tokens=10)),
            run(engine, "g", prompt, SamplingParams(temperature=0, max_tokens=128, json_schema=schema)))
        Weather.model_validate_json(text)
        assert free[1].finish_reason == "length"
    finally:
        await engine.shutdown()


async def test_bad_schema_is_invalid_request(engine_parts):
    thinker, processor = engine_parts
    engine = AsyncEngine(thinker, processor, kv_cache_mb=8)
    prompt = processor([{"role": "user", "content": "hi"}])
    try:
        with pytest.raises(InvalidRequest):
            await run(engine, "bad", prompt, SamplingParams(json_schema={"type": "no-such-type"}))
    finally:
        await engine.shutdown()
