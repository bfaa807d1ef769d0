"""Speech codecs: streaming decode == offline decode, smooth chunk edges, exact resampling, errors."""

import numpy as np
import pytest

from audio.codec import BLOCK_CODES, CodecError, load_codec
from audio.dsp import StreamingResampler, resample

STREAM_TOL = 1e-6  # streaming vs offline: same blocks, so equal up to float32 rounding
EDGE_FACTOR = 3.0  # a block edge's sample step may not exceed 3x the signal's 99.9th percentile step


@pytest.fixture(scope="module")
def codec():
    return load_codec("mel-vq")


@pytest.fixture(scope="module")
def speech_codes(codec):
    from audio.codec.espeak import synthesize

    wave, sr = synthesize("Streaming speech should sound the same as offline speech, chunk after chunk.", "en-us")
    return codec.encode(resample(wave, sr, 16000))


def stream_decode(codec, codes, seed):
    rng = np.random.default_rng(seed)
    out, i = [], 0
    with codec.streaming() as dec:
        while i < len(codes):
            n = int(rng.integers(1, 80))
            out.append(dec.push(codes[i:i + n]))
            i += n
        out.append(dec.flush())
    return np.concatenate(out)


def test_encode_rate_and_range(codec, speech_codes):
    wave = np.zeros(16000 * 2 + 100, np.float32)
    assert codec.encode(wave).shape == (100,)  # 50 Hz: one code per 320 samples
    assert speech_codes.min() >= 0 and speech_codes.max() < 4096
    assert len(np.unique(speech_codes)) > 40


@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_offline_mel_vq(codec, speech_codes, seed):
    offline = codec.decode(speech_codes)
    assert len(offline) == len(speech_codes) * 320
    streamed = stream_decode(codec, speech_codes, seed)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() <= STREAM_TOL


def test_chunk_edges_have_no_discontinuity(codec, speech_codes):
    y = codec.decode(speech_codes)
    step = np.abs(np.diff(y))
    bound = EDGE_FACTOR * np.quantile(step, 0.999)
    edges = np.arange(BLOCK_CODES * 320, len(y) - 1, BLOCK_CODES * 320)
    assert len(edges) >= 2
    for e in edges:
        jump = step[e - 2:e + 2].max()
        assert jump <= bound, f"jump {jump:.4f} at sample {e} > {bound:.4f}"


def test_decoded_speech_resembles_input(codec, speech_codes):
    from audio.codec.mel_vq import log_mel

    y = codec.decode(speech_codes)
    ref = codec.codebook.numpy()[speech_codes]
    got = log_mel(y)[: len(ref)]
    corr = np.corrcoef(ref.ravel(), got.ravel())[0, 1]
    assert corr > 0.8, corr  # the decoded audio carries the coded spectra


def test_resampler_streaming_equals_offline():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    for sr_in, sr_out in [(16000, 24000), (22050, 24000)]:
        rs = StreamingResampler(sr_in, sr_out)
        out, i = [], 0
        while i < len(x):
            n = int(rng.integers(1, 3000))
            out.append(rs.push(x[i:i + n]))
            i += n
        out.append(rs.flush())
        y = np.concatenate(out)
        ref = resample(x, sr_in, sr_out)
        assert y.shape == ref.shape
        assert np.abs(y - ref).max() < 1e-4


def test_bad_inputs(codec):
    with pytest.raises(CodecError, match="empty"):
        codec.encode(np.zeros(0, np.float32))
    with pytest.raises(CodecError, match="NaN"):
        codec.encode(np.full(1000, np.nan, np.float32))
    with pytest.raises(CodecError, match="mono"):
        codec.encode(np.zeros((2, 1000), np.float32))
    with pytest.raises(CodecError, match="shorter than one"):
        codec.encode(np.zeros(100, np.float32))
    with pytest.raises(CodecError, match="no codes"):
        codec.decode([])
    with pytest.raises(CodecError, match=r"\[0, 4096\)"):
        codec.decode([0, 5000])
    with pytest.raises(CodecError, match="integers"):
        codec.decode(np.array([0.5, 1.0]))
    with pytest.raises(CodecError, match="unknown codec"):
        load_codec("nope")
    with pytest.raises(CodecError, match="decodes only"):
        load_codec("ming").encode(np.zeros(1000, np.float32))
    dec = codec.stream_decoder()
    with pytest.raises(CodecError):
        dec.push([-1])
    assert dec.flush().size == 0  # nothing pushed: nothing out
