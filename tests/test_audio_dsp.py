"""Shared audio conversions: PCM16, resampling and G.711 round trips."""

import numpy as np
import pytest

from audio.dsp import (
    AudioError,
    alaw_decode,
    alaw_encode,
    decode_audio_bytes,
    float_to_pcm16_bytes,
    mulaw_decode,
    mulaw_encode,
    pcm16_bytes_to_float,
    resample,
)


def _tone(sr=8000, seconds=0.5, f=440.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_pcm16_round_trip_is_exact():
    ints = np.arange(-32768, 32768, dtype=np.int32).astype("<i2")
    back = np.frombuffer(float_to_pcm16_bytes(pcm16_bytes_to_float(ints.tobytes())), dtype="<i2")
    assert np.array_equal(back, ints)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_bit_exact_with_reference(law):
    audioop = pytest.importorskip("audioop")  # the CPython reference codec (removed in 3.13)
    pcm = np.arange(-32768, 32768, dtype=np.int32).astype("<i2").tobytes()
    wave = pcm16_bytes_to_float(pcm)
    if law == "ulaw":
        assert mulaw_encode(wave) == audioop.lin2ulaw(pcm, 2)
        codes = bytes(range(256))
        assert float_to_pcm16_bytes(mulaw_decode(codes)) == audioop.ulaw2lin(codes, 2)
    else:
        assert alaw_encode(wave) == audioop.lin2alaw(pcm, 2)
        codes = bytes(range(256))
        assert float_to_pcm16_bytes(alaw_decode(codes)) == audioop.alaw2lin(codes, 2)


def test_odd_pcm_bytes_rejected():
    with pytest.raises(AudioError, match="even number"):
        pcm16_bytes_to_float(b"\x00\x01\x02")


@pytest.mark.parametrize(("enc", "dec"), [(mulaw_encode, mulaw_decode), (alaw_encode, alaw_decode)])
def test_g711_round_trip_snr(enc, dec):
    wave = _tone()
    data = enc(wave)
    assert len(data) == len(wave)  # one byte per sample
    back = dec(data)
    snr = 10 * np.log10(np.sum(wave**2) / np.sum((wave - back) ** 2))
    assert snr > 30  # G.711 gives ~38 dB on a loud tone


def test_g711_known_values():
    # ITU-T G.711: silence encodes to 0xFF (mu-law) and 0xD5 (A-law).
    assert mulaw_encode(np.zeros(1, np.float32)) == b"\xff"
    assert alaw_encode(np.zeros(1, np.float32)) == b"\xd5"
    assert abs(mulaw_decode(b"\x80")[0] - 32124 / 32768) < 1e-6
    assert abs(alaw_decode(b"\xaa")[0] - 32256 / 32768) < 1e-6


def test_resample_keeps_duration_and_pitch():
    wave = _tone(sr=24000, seconds=1.0, f=300)
    out = resample(wave, 24000, 16000)
    assert len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 300) < 2


def test_decode_audio_bytes_rejects_garbage():
    with pytest.raises(AudioError):
        decode_audio_bytes(b"definitely not a wav file")
    with pytest.raises(AudioError, match="empty"):
        decode_audio_bytes(b"")
