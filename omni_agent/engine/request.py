"""Request and output types of the engine (the contract in docs/interfaces.md, "Engine").

Public types (``SamplingParams``, ``GenerationRequest``, ``GenerationOutput``) are plain dataclasses:
they travel on the hot path and are validated at the edge (HTTP body, realtime event), not here.
``RequestState`` is the engine's private bookkeeping for one running request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from omni_agent.model.processor import ProcessedPrompt

FinishReason = Literal["stop", "length", "abort"]

MIN_REPETITION_PENALTY = 1e-2  # a normal float32 number whose reciprocal keeps real logits finite
MAX_REPETITION_PENALTY = 1e2
MAX_TEMPERATURE = 100.0  # logits / 100 is already uniform for every practical vocabulary
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


class EngineError(Exception):
    """A request the engine cannot serve; the message is safe to show to a client."""

    code = "engine_error"


class PromptTooLong(EngineError):
    """The prompt (plus at least one generated token) exceeds ``max_model_len`` or the cache budget."""

    code = "context_length_exceeded"


class CacheFull(EngineError):
    """The KV cache cannot hold this request even after evicting every reusable prefix."""

    code = "cache_full"


class InvalidRequest(EngineError):
    """Bad sampling parameters or an unusable JSON schema."""

    code = "invalid_request"


MAX_LOGPROBS = 20  # OpenAI's top_logprobs limit


@dataclass
class TokenLogprob:
    """One sampled token's log-probability and the most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)
    """``(token_id, logprob)``, most likely first."""


@dataclass
class SamplingParams:
    """How to pick tokens for one request.

    ``temperature == 0`` means greedy. ``top_k == 0`` and ``top_p == 1`` disable those filters.
    ``seed`` makes sampling reproducible for this request regardless of what else is batched with it.
    ``json_schema`` constrains the whole completion to JSON matching the schema (xgrammar).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    logprobs: int | None = None
    """Return each sampled token's log-probability and this many most likely alternatives (0: the
    sampled token's only; None: none). Log-probabilities of the model's distribution (raw logits,
    grammar mask applied), before temperature and top-k/top-p, as OpenAI and vLLM report them."""

    def validate(self) -> None:
        """Raise ``InvalidRequest`` for out-of-range values (checked at admission, before any step)."""
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidRequest(f"{name} must be a finite number, got {value!r}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise InvalidRequest(f"temperature must be in [0, {MAX_TEMPERATURE:g}], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidRequest(f"top_k must be >= 0, got {self.top_k}")
        if not MIN_REPETITION_PENALTY <= self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise InvalidRequest(f"repetition_penalty must be in [{MIN_REPETITION_PENALTY:g}, "
                                 f"{MAX_REPETITION_PENALTY:g}], got {self.repetition_penalty}")
        if self.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise InvalidRequest(f"seed must be a 64-bit integer, got {self.seed}")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise InvalidRequest("stop_token_ids must be non-negative integers")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise InvalidRequest(f"logprobs must be in [0, {MAX_LOGPROBS}], got {self.logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-5


@dataclass
class GenerationRequest:
    """One generation: a processed prompt and how to sample its continuation."""

    request_id: str
    prompt: ProcessedPrompt
    sampling: SamplingParams = field(default_factory=SamplingParams)
    return_hidden: bool = False
    """Also stream the thinker's last hidden state for each new token (talker, diffusion decoder)."""


@dataclass
class GenerationOutput:
    """What one engine step produced for one request (a delta, not the running total).

    ``hidden[i]`` is the last hidden state (after the final norm) at the position whose logits
    produced ``token_ids[i]``: the first one belongs to the last prompt token.
    """

    request_id: str
    token_ids: list[int]
    text: str
    hidden: torch.Tensor | None = None
    finished: bool = False
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float | None = None
    logprobs: list[TokenLogprob] | None = None
    """One per ``token_ids`` entry when the request asked for ``SamplingParams.logprobs``."""


@dataclass(eq=False)
class RequestState:
    """The engine's private view of one request, from admission to release."""

    request: GenerationRequest
    arrival: float = field(default_factory=time.perf_counter)
    block_ids: list[int] = field(default_factory=list)
    """KV-cache blocks holding this sequence, in order."""
    num_computed: int = 0
    """Tokens whose K/V are in the cache (the prompt prefix hit counts)."""
    cached_tokens: int = 0
    output_ids: list[int] = field(default_factory=list)
    finished: bool = False
    finish_reason: FinishReason | None = None
    first_token_time: float | None = None
    grammar: Any = None
    """A ``constrained.GrammarState`` when ``json_schema`` is set."""
    detok: Any = None
    """An ``output.IncrementalDetokenizer``."""
    generator: torch.Generator | None = None
    aborted: bool = False
    block_hashes: list[bytes] = field(default_factory=list)
    """Chained hashes of the prompt's full blocks (prefix-cache keys)."""
    committed_blocks: int = 0
    """Full blocks already published to the prefix index (each is committed once)."""
    seen_tokens: torch.Tensor | None = None
    """``[V]`` bool: tokens in the prompt or output so far (repetition penalty), updated per token."""

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def prompt_len(self) -> int:
        return int(self.request.prompt.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return self.prompt_len + len(self.output_ids)
