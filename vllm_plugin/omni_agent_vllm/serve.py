"""``python -m omni_agent_vllm.serve --model DIR``: vLLM's ``AsyncLLM`` with the Ming plugin behind a small
token-in/token-out HTTP API for the omni-agent runtime.

Why not ``vllm serve``'s OpenAI routes: the runtime builds Ming's prompt and preprocesses media itself
(the same code as its embedded engine), so it sends token ids and media tensors, which the OpenAI chat
routes do not take for a custom model. Everything below the API is vLLM: continuous batching, paged KV
cache with prefix caching (media items keyed by the runtime's content hashes), tensor parallelism.

The tokenizer is loaded only for structured outputs (``json_schema``, compiled by xgrammar); prompts and
outputs are token ids.

Routes:
- ``POST /ming/generate``: ``{"request_id", "token_ids", "tensors", "uuids", "sampling": {...}}`` (``wire.py``);
  answers NDJSON lines ``{"token_ids": [new ids], "finished", "finish_reason", "cached_tokens"}``; a bad
  request is a 400 with ``{"error": ...}`` before any line.
- ``POST /ming/abort``: ``{"request_id"}``.
- ``POST /ming/reset_cache``: drop the prefix and media caches.
- ``GET /health``.
"""

import argparse
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from omni_agent_vllm.wire import decode_prompt

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "seed", "stop_token_ids")


def build_app(engine: Any) -> FastAPI:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    app = FastAPI(title="omni-agent vLLM (Ming-Lite-Omni 1.5)")

    @app.get("/health")
    async def health() -> dict[str, str]:
        await engine.check_health()
        return {"status": "ok"}

    @app.post("/ming/abort")
    async def abort(request: Request) -> dict[str, bool]:
        body = await request.json()
        await engine.abort(str(body["request_id"]))
        return {"aborted": True}

    @app.post("/ming/reset_cache")
    async def reset_cache() -> dict[str, bool]:
        """Drop reusable KV prefixes and cached media (benchmarks measure cold and warm requests)."""
        await engine.reset_mm_cache()
        return {"reset": bool(await engine.reset_prefix_cache())}

    @app.post("/ming/generate")
    async def generate(request: Request) -> Any:
        try:
            body = await request.json()
            prompt = decode_prompt(body)
            raw = body.get("sampling") or {}
            sampling = {k: v for k, v in raw.items() if k in SAMPLING_KEYS}
            if raw.get("json_schema") is not None:  # compact JSON (no free whitespace), as the embedded engine
                sampling["structured_outputs"] = StructuredOutputsParams(json=raw["json_schema"],
                                                                         disable_any_whitespace=True)
            params = SamplingParams(**sampling, detokenize=False, output_kind=RequestOutputKind.DELTA)
            stream = engine.generate(prompt, params, str(body["request_id"]))
            first = await anext(stream)  # processing errors (bad media, placeholder mismatch) surface here
        except (ValueError, KeyError, TypeError) as e:
            return JSONResponse({"error": f"{type(e).__name__}: {e}"}, status_code=400)

        async def lines() -> AsyncIterator[bytes]:
            out = first
            while True:
                c = out.outputs[0]
                yield (json.dumps({"token_ids": list(c.token_ids), "finished": out.finished,
                                   "finish_reason": c.finish_reason if out.finished else None,
                                   "cached_tokens": out.num_cached_tokens or 0}) + "\n").encode()
                if out.finished:
                    return
                try:
                    out = await anext(stream)
                except StopAsyncIteration:
                    return

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="Ming-Lite-Omni 1.5 checkpoint folder (release layout)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--dtype", default="auto", help="float32 on CPU; bfloat16 on GPUs")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / torch.compile (always on CPU)")
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--profile-mm", action="store_true", help="run vLLM's multimodal memory profiling (slow on CPU)")
    return p.parse_args(argv)


def engine_args(a: argparse.Namespace) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform

    cpu = current_platform.is_cpu()
    return AsyncEngineArgs(
        model=a.model, enable_mm_embeds=True, max_model_len=a.max_model_len,
        max_num_batched_tokens=max(a.max_model_len, 4096), dtype="float32" if cpu and a.dtype == "auto" else a.dtype,
        tensor_parallel_size=a.tensor_parallel_size, gpu_memory_utilization=a.gpu_memory_utilization,
        enforce_eager=a.enforce_eager or cpu, enable_prefix_caching=not a.no_prefix_caching,
        skip_mm_profiling=not a.profile_mm, limit_mm_per_prompt={"image": 16, "video": 2, "audio": 8},
        structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True})


def main(argv: list[str] | None = None) -> int:
    import uvicorn
    from vllm.v1.engine.async_llm import AsyncLLM

    a = parse_args(argv)
    engine = AsyncLLM.from_engine_args(engine_args(a))
    uvicorn.run(build_app(engine), host=a.host, port=a.port, log_level="warning")
    engine.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
