"""``omni-agent bench realtime`` smoke run (quick, model-free responder): the keys are a contract."""

from omni_agent.bench import BenchContext, registry
from omni_agent.settings import Settings

KEYS = {"vad_to_first_audio_ms_p50", "vad_to_first_audio_ms_p95", "overhead_ms_p50", "barge_in_stop_ms_p50",
        "sessions_sustained", "vad_to_first_audio_ms_p50_loaded", "loop_busy_fraction"}


def test_bench_realtime_quick_keys():
    bench = registry()["realtime"]
    result = bench.fn(BenchContext(Settings(), quick=True, options={"responder": "fake", "max_sessions": "2",
                                                                      "hogs": "1"}))
    assert KEYS <= set(result)
    assert result["turns"] == 2 and result["barge_ins"] == 1
    assert 0 < result["vad_to_first_audio_ms_p50"] < 2000
    assert result["overhead_ms_p50"] == result["overhead_ms_p50"]  # not NaN: the model's share was reported
    assert result["sessions_sustained"] >= 1
    assert 0 < result["vad_to_first_audio_ms_p50_loaded"] < 5000
    assert 0.0 <= result["loop_busy_fraction"] < 0.9
