"""Smoke run of ``omni-agent bench thinker --quick``: the result keys are a contract."""

from __future__ import annotations

from omni_agent.bench import BenchContext, registry
from omni_agent.settings import Settings


def test_thinker_bench_quick_keys() -> None:
    bench = registry()["thinker"]
    result = bench.fn(BenchContext(settings=Settings(), quick=True))
    for key in ("llm_params_real", "llm_active_params_real", "total_params_real", "tiny_prefill_tok_s",
                "tiny_decode_tok_s", "decode_matches_forward"):
        assert key in result, key
    assert result["decode_matches_forward"] is True
    assert abs(result["llm_params_real"] - 16.8e9) / 16.8e9 < 0.02
    assert result["tiny_prefill_tok_s"] > 0 and result["tiny_decode_tok_s"] > 0
    assert result["moe_impl"] == "grouped_mm" and result["tiny_decode_tok_s_moe_loop"] > 0
    for impl in ("loop", "grouped"):
        assert result[f"moe64_layer_ms_{impl}_t1"] > 0 and result[f"moe64_layer_ms_{impl}_t256"] > 0
    assert result["moe64_grouped_max_abs_diff"] < 1e-5
