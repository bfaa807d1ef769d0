"""Audio front end: Whisper log-mel without 30 s padding, the exact 25 Hz token formula, the encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audio.encoder import AudioTooShortError, audio_token_count, log_mel_128, mel_frames
from omni_agent.model.thinker import Thinker


def test_log_mel_shape_and_range() -> None:
    t = np.arange(16000 * 2) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    mel = log_mel_128(wave)
    assert mel.shape == (128, 200)  # 100 Hz, no padding to 3000 frames
    assert mel.max() <= 1.5 + 1e-6 and mel.min() >= mel.max() - 2.0 - 1e-6  # Whisper's 8 dB-decade clamp /4
    peak_bin = int(mel.mean(dim=1).argmax())
    assert 5 <= peak_bin <= 25  # 440 Hz sits low on the 128-bin slaney mel scale


@pytest.mark.parametrize("seconds,tokens", [(1.0, 25), (2.0, 50), (0.04, 1), (0.2, 5), (30.0, 750), (0.5, 13)])
def test_audio_token_count_formula(seconds: float, tokens: int) -> None:
    assert audio_token_count(int(seconds * 16000)) == tokens


def test_token_count_matches_encoder_output() -> None:
    thinker = Thinker.from_preset("tiny")
    rng = np.random.default_rng(0)
    for n in (640, 1000, 3200, 5119, 16000, 24321):
        mel = log_mel_128(rng.standard_normal(n).astype(np.float32) * 0.1)
        assert mel.shape[1] == mel_frames(n)
        with torch.no_grad():
            emb = thinker.encode_audio(mel)
        assert emb.shape == (audio_token_count(n), thinker.hidden_size), n
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(emb.shape[0]))


def test_too_short_audio_is_a_clear_error() -> None:
    assert audio_token_count(639) == 0
    with pytest.raises(AudioTooShortError, match="at least 640 samples"):
        log_mel_128(np.zeros(100, np.float32))
