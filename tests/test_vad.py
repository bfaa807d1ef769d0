"""Streaming Silero VAD on espeak-ng speech with silences."""

import numpy as np
import pytest

from audio.vad import FRAME_SAMPLES, SileroModelPool, StreamingVAD, VadParams
from omni_agent.realtime.testing import espeak

SR = 16000


@pytest.fixture(scope="module")
def pool():
    return SileroModelPool()


@pytest.fixture(scope="module")
def speech():
    return espeak("Hello, this is a test of voice activity detection.", sr=SR)


def _turn(speech, lead_s=1.0, tail_s=1.0):
    return np.concatenate([np.zeros(int(lead_s * SR), np.float32), speech, np.zeros(int(tail_s * SR), np.float32)])


def test_speech_between_silences_gives_one_start_and_one_stop(pool, speech):
    wave = _turn(speech)
    with pool.model() as m:
        vad = StreamingVAD(VadParams(prefix_padding_ms=300, silence_duration_ms=500), m)
        events = vad.push(wave)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    start, stop = events
    voiced = np.nonzero(np.abs(speech) > 0.01)[0]  # espeak pads its output with silence
    onset_ms, end_ms = 1000 + voiced[0] * 1000 // SR, 1000 + voiced[-1] * 1000 // SR
    # started near the real onset minus the 300 ms prefix padding
    assert onset_ms - 400 <= start.audio_ms <= onset_ms
    assert start.detected_ms - start.audio_ms >= 300
    # stopped after the speech ended plus ~500 ms of silence
    assert end_ms + 400 <= stop.audio_ms <= end_ms + 900


def test_silence_and_quiet_noise_give_nothing(pool):
    rng = np.random.default_rng(0)
    wave = (0.003 * rng.standard_normal(3 * SR)).astype(np.float32)
    with pool.model() as m:
        assert StreamingVAD(VadParams(), m).push(wave) == []


def test_chunked_push_equals_one_push(pool, speech):
    """Streaming property: any chunking gives the same events as one push."""
    wave = _turn(speech, 0.5, 1.0)
    with pool.model() as m:
        whole = StreamingVAD(VadParams(), m).push(wave)
    rng = np.random.default_rng(1)
    with pool.model() as m:
        vad = StreamingVAD(VadParams(), m)
        chunked, i = [], 0
        while i < len(wave):
            n = int(rng.integers(1, 3 * FRAME_SAMPLES))
            chunked += vad.push(wave[i:i + n])
            i += n
    assert chunked == whole


def test_silence_duration_controls_the_stop(pool, speech):
    # two utterances 700 ms apart: one turn with 1000 ms silence_duration, two with 300 ms
    gap = np.zeros(int(0.7 * SR), np.float32)
    wave = _turn(np.concatenate([speech, gap, speech]), 0.5, 1.5)
    with pool.model() as m:
        long = StreamingVAD(VadParams(silence_duration_ms=1000), m).push(wave)
    with pool.model() as m:
        short = StreamingVAD(VadParams(silence_duration_ms=300), m).push(wave)
    assert sum(e.kind == "speech_started" for e in long) == 1
    assert sum(e.kind == "speech_started" for e in short) >= 2


def test_reset_restarts_positions(pool, speech):
    wave = _turn(speech, 0.5, 1.0)
    with pool.model() as m:
        vad = StreamingVAD(VadParams(), m)
        first = vad.push(wave)
        vad.reset()
        assert vad.position_ms == 0
        assert vad.push(wave) == first


def test_pool_reuses_models(pool):
    a = pool.acquire()
    pool.release(a)
    assert pool.acquire() is a
    pool.release(a)
