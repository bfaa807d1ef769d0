"""Decode speed of the real ``ming-lite-omni-1.5`` thinker on one CUDA GPU (random bf16 weights).

Builds the full thinker (16.8B-parameter MoE LLM + encoders) directly on the GPU in bf16, prefills a
random prompt, then times greedy decode steps with the KV cache at batch 1 and batch 16, and prints
each against the memory-bandwidth bound: a decode step must read every weight it uses once, i.e.
the non-expert weights + shared experts + the routed experts that the batch's tokens select
(about 2.5B parameters at batch 1; more at batch 16, where the batch touches ~51 of 64 experts).

    python scripts/gpu_thinker_decode.py [--batches 1 8 16] [--prompt 128] [--steps 64] [--bandwidth-gbs 4800]
        [--moe-impl auto] [--prefill 1024] [--compare-loop]
    python scripts/gpu_thinker_decode.py --cpu-smoke --steps 4   # tiny preset on CPU: checks the script only

Also times a prefill of ``--prefill`` tokens (batch 1) and, with ``--compare-loop``, decode at batch 1
with the per-expert MoE loop next to the grouped MoE, plus their bf16 difference on one layer.
Needs CUDA and ~40 GB of GPU memory; exits with status 2 and a message when there is no GPU.
Writes one JSON line with the figures at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def expected_unique_experts(batch: int, n_experts: int, top_k: int) -> float:
    """Experts touched per layer by ``batch`` tokens with uniform routing (no repeats within a token)."""
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** batch)


def bytes_per_step(cfg, batch: int, bytes_per_param: int = 2) -> tuple[float, float]:  # noqa: ANN001
    """(parameters read, bytes read) by one decode step of ``batch`` tokens (weights only, no KV)."""
    llm = cfg.llm
    D, L = llm.hidden_size, llm.num_hidden_layers
    attn = D * (llm.num_attention_heads + 2 * llm.num_key_value_heads) * llm.head_dim + llm.num_attention_heads * llm.head_dim * D
    expert = 3 * D * llm.moe_intermediate_size
    shared = expert * llm.num_shared_experts
    router = llm.num_experts * D
    routed = expected_unique_experts(batch, llm.num_experts, llm.num_experts_per_tok) * expert
    params = L * (attn + shared + router + routed + 2 * D) + llm.vocab_size * D + D  # lm_head; embeddings are gathered
    return params, params * bytes_per_param


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--moe-impl", default="auto", help="MoE implementation: auto, grouped_mm, sorted or loop")
    ap.add_argument("--prefill", type=int, default=1024, help="prompt tokens of the timed prefill (0: skip)")
    ap.add_argument("--compare-loop", action="store_true", help="also decode at batch 1 with the MoE loop")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence")
    ap.add_argument("--steps", type=int, default=64, help="timed decode steps")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--bandwidth-gbs", type=float, default=4800.0, help="HBM bandwidth (H200: 4.8 TB/s)")
    ap.add_argument("--preset", default="ming-lite-omni-1.5", help="thinker preset (tiny: a smoke check)")
    ap.add_argument("--cpu-smoke", action="store_true", help="run the tiny preset on CPU to check the script")
    args = ap.parse_args()

    import torch

    if args.cpu_smoke:
        args.preset = "tiny"
    elif not torch.cuda.is_available():
        print("gpu_thinker_decode: error: no CUDA device; this script measures GPU decode speed and has "
              "nothing to report on CPU", file=sys.stderr)
        return 2

    from omni_agent.model.bailing_moe import MoE
    from omni_agent.model.moe import resolve_impl
    from omni_agent.model.thinker import DynamicCache, Thinker, param_counts

    dev = torch.device("cpu" if args.cpu_smoke else "cuda")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    t0 = time.perf_counter()
    thinker = Thinker.from_preset(args.preset, device=dev, dtype=torch.bfloat16, seed=0)
    sync()
    counts = param_counts(thinker)
    mem = torch.cuda.memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
    print(f"built {args.preset} thinker in {time.perf_counter() - t0:.1f} s on {name}: "
          f"{counts['total'] / 1e9:.2f}B params, {mem:.1f} GiB")
    V = thinker.config.llm.vocab_size
    moes = [m for m in thinker.modules() if isinstance(m, MoE)]

    def set_impl(impl: str) -> None:
        for m in moes:
            m.impl = impl

    set_impl(args.moe_impl)
    results = {"device": name, "preset": args.preset, "prompt_tokens": args.prompt, "steps": args.steps,
               "moe_impl": resolve_impl(args.moe_impl, dev, torch.bfloat16), "weights_gib": round(mem, 2)}
    if args.prefill:
        ids = torch.randint(0, V, (1, args.prefill), device=dev)
        pos = torch.arange(args.prefill, device=dev).view(1, 1, -1).expand(3, 1, -1)
        with torch.inference_mode():
            thinker(thinker.embed_tokens(ids), pos)  # warm-up (packs the experts)
            best = float("inf")
            for _ in range(3):
                sync()
                t0 = time.perf_counter()
                thinker(thinker.embed_tokens(ids), pos)
                sync()
                best = min(best, time.perf_counter() - t0)
        results["prefill_tokens"] = args.prefill
        results["prefill_tok_s"] = args.prefill / best
        print(f"prefill {args.prefill} tokens: {1000 * best:.1f} ms ({args.prefill / best:.0f} tok/s)")
    runs = [(B, args.moe_impl) for B in args.batches] + ([(1, "loop")] if args.compare_loop else [])
    for B, impl in runs:
        set_impl(impl)
        suffix = "" if impl == args.moe_impl else f"_moe_{impl}"
        gen = torch.Generator(device=dev).manual_seed(B)
        ids = torch.randint(0, V, (B, args.prompt), device=dev, generator=gen)
        pos = torch.arange(args.prompt, device=dev).view(1, 1, -1).expand(3, B, -1)
        with torch.inference_mode():
            cache = DynamicCache()
            out = thinker(thinker.embed_tokens(ids), pos, cache=cache)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
            times = []
            for k in range(args.warmup + args.steps):
                p = torch.full((3, B, 1), args.prompt + k, device=dev)
                sync()
                t0 = time.perf_counter()
                out = thinker(thinker.embed_tokens(tok), p, cache=cache)
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                sync()
                if k >= args.warmup:
                    times.append(time.perf_counter() - t0)
        ms = 1000 * sorted(times)[len(times) // 2]
        params, nbytes = bytes_per_step(thinker.config, B)
        bound_ms = 1000 * nbytes / (args.bandwidth_gbs * 1e9)
        print(f"batch {B:3d}: decode {ms:7.2f} ms/step ({B * 1000 / ms:8.1f} tok/s); weights read/step "
              f"{params / 1e9:.2f}B params = {nbytes / 1e9:.1f} GB -> bandwidth bound {bound_ms:.2f} ms "
              f"({100 * bound_ms / ms:.0f}% of bound)")
        results[f"b{B}_ms_per_step{suffix}"] = ms
        results[f"b{B}_tok_s{suffix}"] = B * 1000 / ms
        results[f"b{B}_bound_ms"] = bound_ms
        results[f"b{B}_params_read"] = params
        del cache
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if args.compare_loop:  # grouped vs loop on one real layer, bf16 (the tolerance the CPU test states: 2e-2)
        x = torch.randn(1, 64, thinker.config.llm.hidden_size, device=dev, dtype=torch.bfloat16)
        with torch.inference_mode():
            moes[0].impl = "loop"
            ref = moes[0](x).float()
            moes[0].impl = args.moe_impl
            results["moe_bf16_max_abs_diff"] = float((moes[0](x).float() - ref).abs().max())
            results["moe_bf16_ref_max_abs"] = float(ref.abs().max())
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
