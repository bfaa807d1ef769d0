"""Whisper-style audio encoder (Whisper-large-v3 in Ming-Lite-Omni 1.5) and its log-mel front end.

16 kHz audio -> 128-bin log-mel at 100 Hz (Whisper's recipe, computed with torchaudio, *without*
padding to 30 s) -> conv stem (the second conv has stride 2: 50 Hz) -> transformer blocks -> 50 Hz
states. The thinker's projector (``Conv1d(k=3, s=2)`` then GELU-Linear) brings them to 25 Hz tokens.
Parameter names follow openai-whisper's ``AudioEncoder`` (``conv1``, ``conv2``, ``positional_embedding``,
``blocks.{i}.attn.{query,key,value,out}``, ``attn_ln``, ``mlp.{0,2}``, ``mlp_ln``, ``ln_post``), which is what
Ming's ``whisper_encoder_config`` (n_ctx, n_state, n_head, n_layer, n_mels) describes.

Shape legend: F mel frames (100 Hz), T encoder frames (50 Hz), D width, H heads, d head dim.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audio.dsp import AudioError
from omni_agent.model.config import AudioConfig

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window
HOP = 160  # 10 ms hop: 100 mel frames per second
N_MELS = 128
TOKEN_HZ = 25
MIN_SAMPLES = SAMPLE_RATE // TOKEN_HZ  # one 25 Hz token's worth of audio (40 ms)


class AudioTooShortError(AudioError):
    """Audio shorter than one audio token (40 ms at 16 kHz)."""


def conv_out_len(n: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def mel_frames(num_samples: int) -> int:
    """Log-mel frames for ``num_samples`` (centred STFT, last frame dropped as Whisper does)."""
    return num_samples // HOP


def audio_token_count(num_samples: int, ds_kernel_size: int = 3, ds_stride: int = 2) -> int:
    """Exact number of 25 Hz LLM tokens for ``num_samples`` of 16 kHz audio.

    mel F = n // 160; Whisper conv2 (k3 s2 p1): T = (F - 1) // 2 + 1; projector (k3 s2 p1):
    N = (T - 1) // 2 + 1. Audio shorter than 40 ms yields 0 (callers reject it).
    """
    if num_samples < MIN_SAMPLES:
        return 0
    frames = mel_frames(num_samples)
    t50 = conv_out_len(frames, 3, 2, 1)
    return conv_out_len(t50, ds_kernel_size, ds_stride, ds_kernel_size // 2)


@lru_cache(maxsize=2)
def _mel_transform(n_mels: int):  # noqa: ANN202 - torchaudio module
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=n_mels, power=2.0,
        norm="slaney", mel_scale="slaney", center=True, pad_mode="reflect",
    )


def log_mel_128(wave_16k: np.ndarray | torch.Tensor, n_mels: int = N_MELS) -> torch.Tensor:
    """Whisper log-mel of mono 16 kHz audio -> ``[n_mels, F]`` with F = len // 160 (no 30 s padding).

    Raises:
        AudioTooShortError: fewer than 640 samples (one 25 Hz token).
    """
    wave = torch.as_tensor(np.asarray(wave_16k, dtype=np.float32)).reshape(-1)
    if wave.numel() < MIN_SAMPLES:
        raise AudioTooShortError(
            f"audio is {wave.numel()} samples ({wave.numel() / SAMPLE_RATE * 1000:.1f} ms); the encoder needs at "
            f"least {MIN_SAMPLES} samples (40 ms, one audio token) at 16 kHz"
        )
    with torch.no_grad():
        mel = _mel_transform(n_mels)(wave)[:, :-1]  # [n_mels, F]
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positional table ``[length, channels]``."""
    inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.n_head, -1).transpose(1, 2)  # [B, H, T, d]

        y = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, dim: int, n_head: int) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, n_head)
        self.attn_ln = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """``forward(mel [B, n_mels, F]) -> [B, T, D]`` at 50 Hz, T = (F - 1) // 2 + 1, any F up to 2 * n_ctx."""

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.n_ctx, cfg.n_state))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(cfg.n_state, cfg.n_head) for _ in range(cfg.n_layer))
        self.ln_post = nn.LayerNorm(cfg.n_state)

    @property
    def audio_emb_dim(self) -> int:
        return self.cfg.n_state

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))  # [B, D, F]
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, T, D]
        T = x.shape[1]
        if T > self.positional_embedding.shape[0]:
            raise AudioError(f"audio too long: {T} encoder frames, the encoder covers {self.cfg.n_ctx} "
                             f"({self.cfg.n_ctx / 50:.0f} s)")
        x = x + self.positional_embedding[:T].to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.ln_post(x)
