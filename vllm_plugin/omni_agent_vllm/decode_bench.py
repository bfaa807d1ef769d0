"""``python -m omni_agent_vllm.decode_bench MODEL_DIR [--batches 1 16] [--load-format dummy]``: decode speed
of the plugin in vLLM (used by ``scripts/gpu_vllm.py``; random weights with ``--load-format dummy``).

Per batch size B: B random prompts of ``--prompt`` tokens, timed twice, generating 1 token and then
``1 + steps`` tokens (greedy, ``ignore_eos``); decode ms per step is the difference over ``steps``.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--load-format", default="dummy", help="dummy: random weights, no checkpoint files read")
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (compare with the default)")
    ap.add_argument("--vocab", type=int, default=4096, help="prompt token ids are drawn below this")
    a = ap.parse_args(argv)

    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(model=a.model, skip_tokenizer_init=True, dtype=a.dtype, load_format=a.load_format,
              tensor_parallel_size=a.tensor_parallel_size, enforce_eager=a.enforce_eager, enable_mm_embeds=True,
              max_model_len=a.prompt + a.steps + 16, skip_mm_profiling=True, enable_prefix_caching=False,
              limit_mm_per_prompt={"image": 0, "video": 0, "audio": 0}, seed=0)
    result: dict[str, object] = {"init_s": round(time.perf_counter() - t0, 1), "dtype": a.dtype,
                                 "enforce_eager": a.enforce_eager, "prompt_tokens": a.prompt, "steps": a.steps}
    rng = random.Random(0)

    def timed(batch: int, n: int) -> float:
        prompts = [{"prompt_token_ids": [rng.randrange(10, a.vocab) for _ in range(a.prompt)]} for _ in range(batch)]
        sp = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, detokenize=False)
        t = time.perf_counter()
        llm.generate(prompts, sp, use_tqdm=False)
        return time.perf_counter() - t

    for b in a.batches:
        timed(b, 1 + a.steps)  # warm-up (CUDA graphs, allocator)
        first = min(timed(b, 1) for _ in range(2))
        full = min(timed(b, 1 + a.steps) for _ in range(2))
        ms = 1000 * (full - first) / a.steps
        result[f"b{b}_ms_per_step"] = round(ms, 3)
        result[f"b{b}_tok_s"] = round(b * 1000 / ms, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
