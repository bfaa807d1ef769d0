"""The embedded serving engine: continuous batching, paged KV cache with prefix reuse, constrained decoding.

Public API (docs/interfaces.md, "Engine"): ``SamplingParams``, ``GenerationRequest``,
``GenerationOutput``, ``AsyncEngine`` and the errors a request can end with.
"""

from omni_agent.engine.request import (
    CacheFull,
    EngineError,
    GenerationOutput,
    GenerationRequest,
    InvalidRequest,
    PromptTooLong,
    SamplingParams,
)


def __getattr__(name: str):  # AsyncEngine pulls in torch: import it only when asked for
    if name == "AsyncEngine":
        from omni_agent.engine.engine import AsyncEngine

        return AsyncEngine
    raise AttributeError(name)


__all__ = [
    "AsyncEngine",
    "CacheFull",
    "EngineError",
    "GenerationOutput",
    "GenerationRequest",
    "InvalidRequest",
    "PromptTooLong",
    "SamplingParams",
]
