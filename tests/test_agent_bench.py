"""``omni-agent bench agent --quick``: the smoke run returns every contract key."""

from __future__ import annotations

import math

from omni_agent.bench import BenchContext, registry
from omni_agent.settings import Settings


def test_bench_agent_quick_keys():
    bench = registry()["agent"]
    out = bench.fn(BenchContext(settings=Settings(), quick=True))
    for key in ("graph_overhead_ms_p50", "resume_ok", "gui_step_ms_p50"):
        assert key in out
    assert out["resume_ok"] is True
    assert 0 < out["graph_overhead_ms_p50"] < 1000 and math.isfinite(out["gui_step_ms_p50"])
