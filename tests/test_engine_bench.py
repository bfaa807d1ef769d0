"""``bench engine --quick`` runs and returns every contract key."""

from __future__ import annotations

from omni_agent.bench import BenchContext, registry
from omni_agent.settings import load_settings

KEYS = {"tok_s_c1", "tok_s_c4", "tok_s_c16", "batching_speedup_c16", "prefix_hit_speedup", "ttft_ms_p50"}


def test_engine_bench_quick_smoke():
    bench = registry()["engine"]
    settings = load_settings(flags={"engine.kv_cache_mb": 32}, env={})
    result = bench.fn(BenchContext(settings=settings, quick=True, options={"tokens": "8", "image": "280"}))
    assert KEYS <= set(result)
    assert all(result[k] > 0 for k in KEYS)
    assert abs(result["batching_speedup_c16"] - result["tok_s_c16"] / result["tok_s_c1"]) < 0.02 * result[
        "batching_speedup_c16"] + 0.01
