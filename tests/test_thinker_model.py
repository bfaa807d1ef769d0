"""Thinker LLM: cached decoding equals the full forward, per-modality routing, MRoPE, parameter counts."""

from __future__ import annotations

import pytest
import torch

from omni_agent.model.bailing_moe import MODALITY_AUDIO, MODALITY_IMAGE, MODALITY_TEXT, MoE, causal_mask
from omni_agent.model.config import LLMConfig, ThinkerConfig
from omni_agent.model.thinker import DynamicCache, Thinker, param_counts

ATOL = 1e-5  # fp32: cached and uncached attention differ only in summation order


@pytest.fixture(scope="module")
def tiny() -> Thinker:
    return Thinker.from_preset("tiny", seed=0)


def _pos(start: int, n: int, batch: int = 1) -> torch.Tensor:
    return torch.arange(start, start + n).view(1, 1, -1).expand(3, batch, -1)


@torch.no_grad()
def test_cached_decoding_matches_full_forward(tiny: Thinker) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, tiny.config.llm.vocab_size, (2, 24))
    mod = torch.zeros(2, 24, dtype=torch.long)
    mod[:, 4:10] = MODALITY_IMAGE
    mod[:, 12:15] = MODALITY_AUDIO
    x = tiny.embed_tokens(ids)
    full = tiny(x, _pos(0, 24, 2), mod)
    cache = DynamicCache()
    chunks = [(0, 10), (10, 13), (13, 14), (14, 20)] + [(i, i + 1) for i in range(20, 24)]
    logits, hidden = [], []
    for a, b in chunks:  # prefill, a multi-token chunk, then single tokens
        out = tiny(x[:, a:b], _pos(a, b - a, 2), mod[:, a:b], cache=cache)
        logits.append(out.logits)
        hidden.append(out.hidden)
    assert cache.seq_len == 24
    torch.testing.assert_close(torch.cat(logits, 1), full.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat(hidden, 1), full.hidden, atol=ATOL, rtol=0)
    assert full.logits.shape == (2, 24, tiny.config.llm.vocab_size)
    assert full.hidden.shape == (2, 24, tiny.hidden_size)


@torch.no_grad()
def test_explicit_mask_equals_causal(tiny: Thinker) -> None:
    x = tiny.embed_tokens(torch.randint(0, 100, (1, 9)))
    mask = causal_mask(9, 9, "cpu").view(1, 1, 9, 9)
    a = tiny(x, _pos(0, 9)).logits
    b = tiny(x, _pos(0, 9), attn_mask=mask).logits
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    # Masking out the first key changes every later row but not the first rows' independence of it.
    mask2 = mask.clone()
    mask2[..., 1:, 0] = False
    c = tiny(x, _pos(0, 9), attn_mask=mask2).logits
    torch.testing.assert_close(c[:, 0], a[:, 0], atol=ATOL, rtol=0)
    assert not torch.allclose(c[:, 1:], a[:, 1:], atol=1e-4)


def _perturb(layers, name: str) -> None:
    for layer in layers:
        router = getattr(layer.mlp, name)
        router.weight.data = torch.randn_like(router.weight) * 5


@torch.no_grad()
def test_moe_uses_the_router_of_each_tokens_modality() -> None:
    cfg = ThinkerConfig.preset("tiny").llm
    torch.manual_seed(0)
    moe = MoE(cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(1, 30, cfg.hidden_size)
    mod = torch.tensor([[MODALITY_TEXT, MODALITY_IMAGE, MODALITY_AUDIO] * 10])
    base = moe(x, mod)
    for name, changed in (("image_gate", MODALITY_IMAGE), ("audio_gate", MODALITY_AUDIO), ("gate", MODALITY_TEXT)):
        saved = getattr(moe, name).weight.data.clone()
        getattr(moe, name).weight.data = torch.randn_like(saved) * 5
        out = moe(x, mod)
        getattr(moe, name).weight.data = saved
        # Expert batches change composition, so untouched rows may differ by float rounding only.
        diff = (out - base).abs().amax(-1)[0] / base.abs().amax()  # [T], relative
        assert torch.all(diff[mod[0] != changed] < 1e-5), f"{name} touched other modalities' tokens"
        assert torch.all(diff[mod[0] == changed] > 1e-3), f"{name} did not route its own tokens"
    # With no modality ids every token goes through the text router.
    weights, idx = moe.route(x[0], None)
    w_t, i_t = moe.gate(x[0])
    assert torch.equal(idx, i_t)


@torch.no_grad()
def test_routing_end_to_end_only_changes_image_tokens() -> None:
    thinker = Thinker.from_preset("tiny", seed=1)
    # text, then audio, then image: causal attention lets a change flow only forwards.
    mod = torch.tensor([[0] * 8 + [MODALITY_AUDIO] * 4 + [MODALITY_IMAGE] * 4])
    x = torch.randn(1, 16, thinker.hidden_size)
    base = thinker(x, _pos(0, 16), mod).hidden
    _perturb(thinker.model.model.layers, "image_gate")
    out = thinker(x, _pos(0, 16), mod).hidden
    diff = (out - base).abs().amax(-1)[0]
    assert torch.all(diff[:12] < 1e-5)  # text and audio rows untouched (up to float rounding)
    assert torch.all(diff[12:] > 1e-3)  # image rows routed differently
    # The same tokens labelled as text do not see the image router at all.
    text_only = thinker(x, _pos(0, 16), torch.zeros_like(mod)).hidden
    _perturb(thinker.model.model.layers, "image_gate")
    torch.testing.assert_close(thinker(x, _pos(0, 16), torch.zeros_like(mod)).hidden, text_only, atol=1e-5, rtol=0)


def test_mrope_sections_select_rows() -> None:
    from omni_agent.model.bailing_moe import mrope_cos_sin, rope_inv_freq

    cfg = LLMConfig(head_dim=16, mrope_section=[2, 3, 3])
    inv = rope_inv_freq(16, 10000.0)
    pos = torch.stack([torch.full((1, 1), 5), torch.full((1, 1), 7), torch.full((1, 1), 11)])  # t, h, w
    cos, _ = mrope_cos_sin(inv, pos, cfg)
    expected_pos = torch.tensor([5, 5, 7, 7, 7, 11, 11, 11], dtype=torch.float32)
    torch.testing.assert_close(cos[0, 0, 0, :8], torch.cos(expected_pos * inv))
    vcfg = LLMConfig(head_dim=16, rope_type="video_rope", video_rope_section=[6, 2])
    cos_v, _ = mrope_cos_sin(inv, pos, vcfg)
    expected_v = torch.tensor([7, 11, 7, 11, 7, 11, 5, 5], dtype=torch.float32)  # h/w interleaved, t lowest freq
    torch.testing.assert_close(cos_v[0, 0, 0, :8], torch.cos(expected_v * inv))


def test_real_preset_on_meta_counts(capsys: pytest.CaptureFixture[str]) -> None:
    thinker = Thinker.from_preset("ming-lite-omni-1.5", device="meta")
    counts = param_counts(thinker)
    with capsys.disabled():
        print("\nming-lite-omni-1.5 thinker parameters (exact):")
        for k, v in counts.items():
            print(f"  {k:18s} {v:>15,d}  ({v / 1e9:.3f} B)")
    assert abs(counts["llm"] - 16.8e9) / 16.8e9 < 0.02
    assert abs(counts["llm_active"] - 2.75e9) / 2.75e9 < 0.02
    assert counts["total"] == sum(counts[k] for k in ("llm", "vision", "vision_projector", "audio", "audio_projector"))
    layer = thinker.model.model.layers[0]
    assert layer.attention.query_key_value.weight.shape == (24 * 128, 2048)  # (16 + 2*4) heads of 128
    assert len(layer.mlp.experts) == 64 and layer.mlp.shared_experts.gate_proj.weight.shape == (2816, 2048)
    assert thinker.linear_proj[0].weight.shape == (2048, 8192)
    assert thinker.linear_proj_audio[0].weight.shape == (2048, 1280, 3)


def test_tiny_preset_is_small_and_fast(tiny: Thinker) -> None:
    import time

    n = sum(p.numel() for p in tiny.parameters())
    assert 1e6 < n < 10e6
    x = tiny.embed_tokens(torch.randint(0, 100, (1, 64)))
    best = float("inf")
    with torch.no_grad():
        tiny(x, _pos(0, 64))
        for _ in range(5):  # best of 5: the CI machine is shared
            t0 = time.perf_counter()
            tiny(x, _pos(0, 64))
            best = min(best, time.perf_counter() - t0)
    assert best < 1.0


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown thinker preset"):
        Thinker.from_preset("huge")


@torch.no_grad()
def test_left_padded_batch_with_mask_matches_single_runs(tiny: Thinker) -> None:
    """The engine's batching contract: padded rows + a bool mask give each row its solo logits."""
    torch.manual_seed(1)
    lens = [7, 4]
    T = max(lens)
    seqs = [torch.randint(0, 500, (n,)) for n in lens]
    ids = torch.zeros(2, T, dtype=torch.long)
    valid = torch.zeros(2, T, dtype=torch.bool)
    pos = torch.zeros(3, 2, T, dtype=torch.long)
    for b, s in enumerate(seqs):  # left padding
        ids[b, T - len(s):] = s
        valid[b, T - len(s):] = True
        pos[:, b, T - len(s):] = torch.arange(len(s))
    mask = causal_mask(T, T, "cpu")[None, None] & valid[:, None, None, :]  # [B, 1, T, T]
    cache = DynamicCache()
    out = tiny(tiny.embed_tokens(ids), pos, cache=cache, attn_mask=mask)
    assert torch.isfinite(out.logits).all()
    nxt = torch.tensor([[11], [12]])
    step_pos = torch.tensor(lens).view(1, 2, 1).expand(3, 2, 1)
    step_mask = torch.cat([valid, torch.ones(2, 1, dtype=torch.bool)], 1)[:, None, None, :]  # [B, 1, 1, T+1]
    step = tiny(tiny.embed_tokens(nxt), step_pos, cache=cache, attn_mask=step_mask)
    for b, s in enumerate(seqs):
        solo = tiny(tiny.embed_tokens(torch.cat([s, nxt[b]])[None]), _pos(0, len(s) + 1)).logits[0]
        torch.testing.assert_close(out.logits[b, T - len(s):], solo[:-1], atol=ATOL, rtol=0)
        torch.testing.assert_close(step.logits[b, 0], solo[-1], atol=ATOL, rtol=0)
