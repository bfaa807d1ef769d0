"""scripts/gpu_bench.sh's plumbing on CPU: parts run or are reported missing, one JSON line at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_bench_cpu_smoke() -> None:
    env = {**os.environ, "GPU_BENCH_CPU_SMOKE": "1", "GPU_BENCH_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "scripts/gpu_bench.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["thinker_prefill_tok_s"] > 0 and result["thinker_decode_ms_b1"] > 0
    assert result["thinker_decode_ms_b1_moe_loop"] > 0 and result["thinker_moe_impl"] == "grouped_mm"
    assert result["thinker_moe_bf16_max_abs_diff"] < 2e-2
    for part in ("speech", "talker", "dit", "vllm"):  # absent, or exiting with their no-GPU message
        assert result["parts"][part] is None and result["missing"][part]
    for key in ("talker_tok_s", "detok_rtf", "first_audio_ms_c1", "first_audio_ms_c8",
                "dit_s_per_step_1024_two_scale", "vllm_decode_ms_b1", "elapsed_s", "deps_mismatch"):
        assert key in result, key
