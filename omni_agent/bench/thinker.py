"""``omni-agent bench thinker``: parameter counts of the real preset and tiny-preset CPU speed.

Keys: ``llm_params_real``, ``llm_active_params_real`` (per token), ``total_params_real`` (whole thinker,
counted on the ``meta`` device), ``tiny_prefill_tok_s``, ``tiny_decode_tok_s`` and
``decode_matches_forward`` (cached greedy decoding reproduces the full forward's logits, fp32).

MoE side by side (``omni_agent.model.moe``): ``moe_impl`` (what ``auto`` runs here), the tiny figures
again with the per-expert loop (``tiny_prefill_tok_s_moe_loop``, ``tiny_decode_tok_s_moe_loop``), and
one MoE layer with the real expert layout (64 experts, top-6, 2 shared; width 512/352, a quarter of
the real one, fp32) timed at 1 and 256 tokens with each implementation
(``moe64_layer_ms_{loop,grouped}_t{1,256}``) plus ``moe64_grouped_max_abs_diff`` against the loop.
"""

from __future__ import annotations

import time
from typing import Any

from omni_agent.bench import BenchContext, benchmark

MATCH_ATOL = 1e-4  # fp32 logits of cached vs uncached runs differ only by summation order


def _set_moe_impl(model: Any, impl: str) -> None:
    from omni_agent.model.bailing_moe import MoE

    for m in model.modules():
        if isinstance(m, MoE):
            m.impl = impl


def _moe_layer_figures(repeats: int) -> dict[str, Any]:
    """One 64-expert MoE layer, loop vs grouped, at a decode step (1 token) and a prefill (256)."""
    import torch

    from omni_agent.model.bailing_moe import MoE, init_weights
    from omni_agent.model.config import LLMConfig

    cfg = LLMConfig(hidden_size=512, moe_intermediate_size=352)  # 64 experts, top-6, 2 shared (real layout)
    torch.manual_seed(0)
    moe = MoE(cfg)
    init_weights(moe, 0.02)
    out: dict[str, Any] = {}
    diff = 0.0
    with torch.inference_mode():
        for n in (1, 256):
            x = torch.randn(1, n, cfg.hidden_size)
            results = {}
            for impl in ("loop", "grouped"):
                moe.impl = "loop" if impl == "loop" else "auto"
                results[impl] = moe(x)  # warm-up (and packing)
                best = float("inf")
                for _ in range(max(repeats, 3) * (20 if n == 1 else 1)):
                    t0 = time.perf_counter()
                    moe(x)
                    best = min(best, time.perf_counter() - t0)
                out[f"moe64_layer_ms_{impl}_t{n}"] = round(1000 * best, 3)
            diff = max(diff, float((results["grouped"] - results["loop"]).abs().max()))
    out["moe64_grouped_max_abs_diff"] = diff
    return out


@benchmark("thinker", help="thinker parameter counts (real preset on meta), tiny prefill/decode speed, MoE loop "
                           "vs grouped")
def bench_thinker(ctx: BenchContext) -> dict[str, Any]:
    import torch

    from omni_agent.model.moe import resolve_impl
    from omni_agent.model.thinker import DynamicCache, Thinker, param_counts

    real = param_counts(Thinker.from_preset("ming-lite-omni-1.5", device="meta"))
    prompt_len = int(ctx.options.get("prompt_len", 32 if ctx.quick else 256))
    new_tokens = int(ctx.options.get("new_tokens", 8 if ctx.quick else 64))
    repeats = 1 if ctx.quick else 3

    thinker = Thinker.from_preset("tiny", seed=ctx.settings.model.seed)
    V = thinker.config.llm.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (1, prompt_len), generator=gen)

    def pos(start: int, n: int) -> torch.Tensor:
        return torch.arange(start, start + n).view(1, 1, -1).expand(3, 1, -1)

    def timed() -> tuple[float, float, bool]:
        """(best prefill s, best decode s/token, cached decode == full forward)."""
        with torch.inference_mode():
            thinker(thinker.embed_tokens(ids), pos(0, prompt_len))  # warm-up
            best_prefill, best_decode = float("inf"), float("inf")
            for _ in range(repeats):
                cache = DynamicCache()
                t0 = time.perf_counter()
                out = thinker(thinker.embed_tokens(ids), pos(0, prompt_len), cache=cache)
                best_prefill = min(best_prefill, time.perf_counter() - t0)
                tokens = [int(out.logits[0, -1].argmax())]
                step_logits = [out.logits[0, -1]]
                t0 = time.perf_counter()
                for k in range(new_tokens - 1):
                    step = thinker(thinker.embed_tokens(torch.tensor([[tokens[-1]]])), pos(prompt_len + k, 1),
                                   cache=cache)
                    step_logits.append(step.logits[0, -1])
                    tokens.append(int(step.logits[0, -1].argmax()))
                best_decode = min(best_decode, (time.perf_counter() - t0) / max(new_tokens - 1, 1))
            full_ids = torch.cat([ids, torch.tensor([tokens[:-1]])], dim=1)
            full = thinker(thinker.embed_tokens(full_ids), pos(0, full_ids.shape[1])).logits[0, prompt_len - 1:]
            return best_prefill, best_decode, bool(torch.allclose(full, torch.stack(step_logits), atol=MATCH_ATOL,
                                                                  rtol=0))

    best_prefill, best_decode, matches = timed()  # the default (auto) MoE
    _set_moe_impl(thinker, "loop")
    loop_prefill, loop_decode, loop_matches = timed()
    _set_moe_impl(thinker, "auto")

    return {
        "llm_params_real": real["llm"],
        "llm_active_params_real": real["llm_active"],
        "total_params_real": real["total"],
        "vision_params_real": real["vision"] + real["vision_projector"],
        "audio_params_real": real["audio"] + real["audio_projector"],
        "tiny_params": sum(p.numel() for p in thinker.parameters()),
        "tiny_prompt_tokens": prompt_len,
        "tiny_prefill_tok_s": prompt_len / best_prefill,
        "tiny_decode_tok_s": 1.0 / best_decode,
        "decode_matches_forward": matches and loop_matches,
        "moe_impl": resolve_impl("auto", torch.device("cpu"), torch.float32),
        "tiny_prefill_tok_s_moe_loop": prompt_len / loop_prefill,
        "tiny_decode_tok_s_moe_loop": 1.0 / loop_decode,
        **_moe_layer_figures(repeats),
    }
