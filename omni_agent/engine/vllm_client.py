"""The engine interface backed by vLLM: a client of a vLLM server that runs the Ming plugin.

vLLM 0.32 needs torch 2.13 and this runtime is on torch 2.11 (torchaudio), so vLLM lives in its own
environment (``make vllm``) and runs ``omni_agent_vllm.serve`` (vLLM's ``AsyncLLM`` with the plugin,
``vllm_plugin/``); ``omni-agent serve --engine vllm`` starts it or connects to ``--vllm-url``. This module
builds Ming's prompt exactly as the embedded engine does (``OmniProcessor``: chat format, placeholders,
preprocessed media), sends token ids + media tensors, and turns the streamed token ids into the same
``GenerationOutput`` deltas (detokenisation and stop strings here, as in the embedded engine).

What differs from the embedded engine, by design:
- ``json_schema`` goes to vLLM's structured outputs (xgrammar, compact JSON). The embedded engine also
  narrows the grammar when a request's token budget runs short so the JSON always closes; vLLM does not,
  so a model that rambles inside a string can hit ``max_tokens`` with unfinished JSON.
- ``return_hidden``: vLLM's generate path returns no hidden states; outputs carry ``hidden=None`` and the
  talker speaks from text, which is how Ming 1.5 drives its talker anyway (logged once).
- ``thinker``: image-generation conditions need the thinker's hidden states over learned query embeddings
  that are not token ids, so they are computed by a local thinker loaded on first use from the same
  checkpoint (``docs/engine.md``, "vLLM").
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from omni_agent.engine.input_processor import check_request
from omni_agent.engine.output_processor import IncrementalDetokenizer, check_stop, make_output
from omni_agent.engine.request import (
    EngineError,
    GenerationOutput,
    GenerationRequest,
    InvalidRequest,
    RequestState,
)

log = logging.getLogger(__name__)

MEDIA_FIELDS = {"image": ("pixel_values", "image_grid_thw"), "video": ("pixel_values_videos", "video_grid_thw")}


class VllmUnavailable(EngineError):
    """The vLLM server cannot be reached or ended a stream early; the message names the URL."""

    code = "engine_unavailable"


def encode_prompt(prompt: Any) -> dict[str, Any]:
    """A ``ProcessedPrompt`` -> the plugin's wire format (``vllm_plugin/omni_agent_vllm/wire.py``).

    Token ids as they are; per modality the items' tensors concatenated in prompt order (image/video
    patches with their grids, log-mel transposed to ``[F, 128]`` with frame counts); content hashes as
    vLLM's ``multi_modal_uuids`` so its prefix and encoder caches recognise a repeated item.
    """
    import torch
    from safetensors.torch import save

    groups: dict[str, list[Any]] = {"image": [], "video": [], "audio": []}
    for item in prompt.mm_items:
        groups[item.kind].append(item)
    tensors: dict[str, torch.Tensor] = {}
    for kind, (pv_key, grid_key) in MEDIA_FIELDS.items():
        if groups[kind]:
            tensors[f"{kind}.{pv_key}"] = torch.cat([it.pixel_values.float() for it in groups[kind]])
            tensors[f"{kind}.{grid_key}"] = torch.cat([it.grid_thw.reshape(1, 3).long() for it in groups[kind]])
    if groups["audio"]:
        tensors["audio.audio_mel"] = torch.cat([it.mel.float().T for it in groups["audio"]])  # [F, 128]
        tensors["audio.audio_num_frames"] = torch.tensor([it.mel.shape[1] for it in groups["audio"]])
    payload: dict[str, Any] = {"token_ids": prompt.input_ids.tolist()}
    if tensors:
        payload["tensors"] = base64.b64encode(save({k: v.contiguous() for k, v in tensors.items()})).decode()
        payload["uuids"] = {k: [it.content_hash for it in v] for k, v in groups.items() if v}
    return payload


def sampling_payload(request: GenerationRequest, max_tokens: int, eos_ids: set[int]) -> dict[str, Any]:
    sp = request.sampling
    if sp.logprobs is not None:  # refused, not silently dropped: the plugin's server returns token ids only
        raise InvalidRequest("logprobs are not available with --engine vllm (the embedded engine has them)")
    return {"temperature": sp.temperature, "top_p": sp.top_p, "top_k": sp.top_k or -1,
            "repetition_penalty": sp.repetition_penalty, "max_tokens": max_tokens, "seed": sp.seed,
            "stop_token_ids": sorted(set(sp.stop_token_ids) | eos_ids), "json_schema": sp.json_schema}


class VllmEngine:
    """``AsyncEngine``'s interface (docs/interfaces.md, "Engine") over a vLLM server running the plugin.

    Args:
        url: base URL of ``omni_agent_vllm.serve`` (e.g. ``http://127.0.0.1:8100``).
        processor: the ``OmniProcessor`` of the same checkpoint (tokenizer, chat format, media).
        max_model_len: longest prompt plus completion (must not exceed the server's).
        model_path: the checkpoint folder (for the local thinker image generation needs), or None.
        timeout_s: connect/read timeout for one request's stream.
    """

    def __init__(self, url: str, processor: Any, *, max_model_len: int = 8192, model_path: str | None = None,
                 timeout_s: float = 600.0, server: Any = None) -> None:
        if getattr(processor, "time_aligned_video", False):
            raise ValueError("time_aligned_video position ids are not implemented in the vLLM plugin (it follows "
                             "Ming's generate path); use the embedded engine for them")
        self.url = url.rstrip("/")
        self.processor = processor
        self.max_model_len = max_model_len
        self.model_path = model_path
        self.timeout_s = timeout_s
        self.server = server
        """The ``VllmServer`` this engine started (stopped by ``shutdown``), or None when connecting."""
        self.eos_ids = {int(processor.eos_token_id)}
        self._client: Any = None
        self._running: set[str] = set()
        self._thinker: Any = None
        self._warned_hidden = False
        self.requests = 0
        self.failures = 0
        self.tokens_generated = 0

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the HTTP client (idempotent). A server that does not answer yet is logged, not fatal:
        each request then fails with ``VllmUnavailable`` until it does, and sessions carry on."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s, connect=10.0))
        try:
            await self.check()
        except VllmUnavailable as e:
            log.error("%s", e)

    async def check(self) -> None:
        """Raise ``VllmUnavailable`` unless the server answers ``GET /health``."""
        import httpx

        try:
            r = await self._client.get(f"{self.url}/health")
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise VllmUnavailable(f"vLLM server at {self.url} is unreachable: {e!r}") from e

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)

    # --- requests ---------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        """Stream one request's outputs from vLLM; the last one has ``finished=True``.

        Raises:
            EngineError: bad parameters, a prompt that does not fit, or ``VllmUnavailable`` when the server
                cannot be reached or dies mid-stream (the caller's session carries on).
        """
        import httpx

        if self._client is None:
            await self.start()
        max_tokens = check_request(request, self.max_model_len, self.max_model_len)
        sampling = sampling_payload(request, max_tokens, self.eos_ids)
        # media tensors -> torch.save -> base64 is CPU work (megabytes for a video): off the event loop
        body = {"request_id": request.request_id, **await asyncio.to_thread(encode_prompt, request.prompt),
                "sampling": sampling}
        if request.return_hidden and not self._warned_hidden:
            log.warning("vLLM returns no hidden states on generation: the talker speaks from text (Ming 1.5's default)")
            self._warned_hidden = True
        state = RequestState(request)
        state.detok = IncrementalDetokenizer(self.processor.tokenizer, request.sampling.stop, self.eos_ids)
        rid = request.request_id
        self._running.add(rid)
        self.requests += 1
        finished = False
        try:
            async with self._client.stream("POST", f"{self.url}/ming/generate", json=body) as r:
                if r.status_code != 200:
                    detail = (await r.aread()).decode(errors="replace")[:500]
                    error = EngineError if r.status_code < 500 else VllmUnavailable
                    raise error(f"vLLM server at {self.url} refused the request ({r.status_code}): {detail}")
                async for line in r.aiter_lines():
                    if not line:
                        continue
                    msg = json.loads(line)
                    if "error" in msg:
                        raise EngineError(f"vLLM: {msg['error']}")
                    new: list[int] = []
                    for tok in msg.get("token_ids", []):
                        state.output_ids.append(int(tok))
                        new.append(int(tok))
                        check_stop(state, int(tok), self.eos_ids, max_tokens)
                        if state.finished:
                            break
                    if msg.get("finished") and not state.finished:
                        state.finished = True
                        state.finish_reason = msg.get("finish_reason") or "stop"
                    state.cached_tokens = int(msg.get("cached_tokens") or 0)
                    self.tokens_generated += len(new)
                    if new or state.finished:
                        out = make_output(state, new)
                        finished = state.finished
                        yield out
                    if state.finished:
                        return
            raise VllmUnavailable(f"vLLM server at {self.url} ended the stream before the request finished")
        except httpx.HTTPError as e:
            self.failures += 1
            raise VllmUnavailable(f"vLLM server at {self.url} failed mid-request: {e!r}") from e
        finally:
            self._running.discard(rid)
            if not finished:
                self.abort(rid)  # stopped early (stop string, client gone, error): free vLLM's blocks too

    def abort(self, request_id: str) -> None:
        """Ask the server to stop a request (fire and forget; unknown ids are ignored there)."""
        if self._client is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.create_task(self._abort(request_id))

    async def _abort(self, request_id: str) -> None:
        import httpx

        try:
            await self._client.post(f"{self.url}/ming/abort", json={"request_id": request_id})
        except (httpx.HTTPError, AttributeError):  # server gone or client closed: nothing left to free
            pass

    async def reset_cache(self) -> None:
        """Drop the server's reusable KV prefixes and cached media (benchmarks)."""
        r = await self._client.post(f"{self.url}/ming/reset_cache")
        r.raise_for_status()

    def stats(self) -> dict[str, Any]:
        return {"engine": "vllm", "url": self.url, "running": len(self._running), "requests": self.requests,
                "failures": self.failures, "tokens_generated": self.tokens_generated}

    # --- the local thinker (image-generation conditions) ------------------------------------------
    @property
    def thinker(self) -> Any:
        """The thinker for in-process work (image-generation conditions, see the module docstring): a proxy
        that answers ``hidden_size`` from the config and loads a local ``Thinker`` of the same checkpoint on
        the first other use."""
        if self._thinker is None:
            self._thinker = _LocalThinker(self.model_path, self.processor)
        return self._thinker


class _LocalThinker:
    def __init__(self, model_path: str | None, processor: Any) -> None:
        self.hidden_size = processor.config.llm.hidden_size
        self._path, self._preset, self._model = model_path, processor.config.name, None

    def __getattr__(self, name: str) -> Any:
        if self._model is None:
            from omni_agent.model.thinker import Thinker

            t0 = time.perf_counter()
            self._model = (Thinker.from_pretrained(self._path) if self._path else Thinker.from_preset(self._preset))
            log.info("loaded a local thinker for image-generation conditions in %.1f s", time.perf_counter() - t0)
        return getattr(self._model, name)
