"""Prometheus metrics of the engine, in the default registry (registered once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TTFT = Histogram(
    "omni_engine_time_to_first_token_seconds", "Time from request arrival to its first generated token.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
GENERATED_TOKENS = Counter("omni_engine_generated_tokens", "Tokens generated (all requests).")
PROMPT_TOKENS = Counter("omni_engine_prompt_tokens", "Prompt tokens admitted (all requests).")
CACHED_PROMPT_TOKENS = Counter("omni_engine_cached_prompt_tokens", "Prompt tokens served from the prefix cache.")
TOKENS_PER_SECOND = Gauge("omni_engine_decode_tokens_per_second",
                          "Aggregate decode throughput, smoothed over recent steps.")
QUEUE_DEPTH = Gauge("omni_engine_queue_depth", "Requests waiting for admission.")
RUNNING = Gauge("omni_engine_running_requests", "Requests being decoded.")
PREFIX_HIT_RATE = Gauge("omni_engine_prefix_cache_hit_rate",
                        "Fraction of admitted prompts that reused at least one cached KV block.")
PREFIX_HIT_TOKEN_RATE = Gauge("omni_engine_prefix_cache_token_hit_rate",
                              "Fraction of prompt tokens served from the prefix cache.")
KV_USAGE = Gauge("omni_engine_kv_cache_usage", "Fraction of KV blocks referenced by running requests.")
REQUESTS = Counter("omni_engine_requests", "Finished requests by finish reason.", ["finish_reason"])
