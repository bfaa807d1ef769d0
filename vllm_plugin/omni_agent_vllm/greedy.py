"""``python -m omni_agent_vllm.greedy IN.json OUT.json``: run prompts through vLLM in one process.

Used by the project's tests and ``omni-agent bench engine --engine vllm`` (they run in the project's
environment and call this in the vLLM one). ``IN.json``: ``{"model": dir, "requests": [payload + "max_tokens"
(+ "stop_token_ids")], "engine": {extra vLLM engine args}, "concurrency": [1, 16] (optional)}``; payloads
are ``wire.py``'s. ``OUT.json``: greedy token ids per request with their log-probs, the MRoPE positions and decode delta
vLLM computed for each prompt (through the model's ``get_mrope_input_positions``), and, with
``concurrency``, decode throughput at each level.

Settings for a small CPU (the CI machine): one process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), 1 GiB of KV
cache, eager mode, fp32, no multimodal memory profiling.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def run(spec: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    from omni_agent_vllm.model import BailingMMNativeForConditionalGeneration as Model
    from omni_agent_vllm.wire import decode_prompt

    positions: list[dict[str, Any]] = []
    original = Model.get_mrope_input_positions

    def recording(self, input_tokens, mm_features):  # noqa: ANN001, ANN202
        pos, delta = original(self, input_tokens, mm_features)
        positions.append({"tokens": list(input_tokens), "positions": pos.tolist(), "delta": int(delta)})
        return pos, delta

    Model.get_mrope_input_positions = recording  # in-process engine: the model class is this one
    args = dict(skip_tokenizer_init=True, enforce_eager=True, dtype="float32", max_model_len=4096,
                max_num_batched_tokens=4096, skip_mm_profiling=True, seed=0, enable_mm_embeds=True,
                limit_mm_per_prompt={"image": 4, "video": 2, "audio": 4})
    args.update(spec.get("engine", {}))
    t0 = time.perf_counter()
    llm = LLM(model=spec["model"], **args)
    init_s = time.perf_counter() - t0
    prompts = [decode_prompt(r) for r in spec["requests"]]
    params = [SamplingParams(temperature=0.0, max_tokens=int(r.get("max_tokens", 16)), detokenize=False, logprobs=0,
                             stop_token_ids=list(r.get("stop_token_ids", []))) for r in spec["requests"]]
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    result: dict[str, Any] = {
        "outputs": [list(o.outputs[0].token_ids) for o in outs], "init_s": init_s,
        "logprobs": [[step[t].logprob for t, step in zip(o.outputs[0].token_ids, o.outputs[0].logprobs, strict=True)]
                     for o in outs],
        "generate_s": time.perf_counter() - t0, "positions": positions,
    }
    result["throughput"] = {str(c): _throughput(llm, prompts[0], c, int(spec.get("bench_tokens", 64)))
                            for c in spec.get("concurrency", [])}
    return result


def _throughput(llm: Any, prompt: dict[str, Any], concurrency: int, max_tokens: int) -> float:
    """Generated tokens per second for ``concurrency`` copies of one prompt (prefix cache warm)."""
    from vllm import SamplingParams

    sp = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
    llm.generate([prompt], sp, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate([prompt] * concurrency, sp, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t0)


def main() -> int:
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        spec = json.load(f)
    result = run(spec)
    with open(dst, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
