"""Ming's detokenizer architecture (CosyVoice-style): codes -> mel by conditional flow matching,
mel -> waveform by a HiFT-style vocoder (iSTFT head) at 22.05 kHz.

Module names follow CosyVoice's ``flow.pt`` / ``hift.pt`` state dicts (``input_embedding``,
``spk_embed_affine_layer``, ``encoder``, ``encoder_proj``, ``decoder.estimator``; ``conv_pre``,
``ups``, ``resblocks``, ``conv_post``) and a checkpoint's ``talker/`` folder is searched for them.
Only the layers named here are implemented: the Conformer encoder, the U-Net estimator and HiFT's
neural-source-filter excitation are replaced by small convolution stacks, so Ming's released
weights do not load into this module yet (``from_pretrained`` says which tensors are missing).
The ``tiny`` preset has random weights and exists to exercise the streaming path end to end.

Legend: N codes, Tm mel frames, M mel bins (80), C channels, S samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audio.codec.base import CODEBOOK_SIZE, CodecError, DecoderState, SpeechCodec, check_wave

SAMPLE_RATE = 22050  # HiFT output rate in Ming / CosyVoice v1
MEL_HOP = 256  # vocoder hop: mel frames at 86.13 Hz
FLOW_FILES = ("flow.pt", "flow_stream.pt")
HIFT_FILES = ("hift.pt", "hift_v2.pt")


@dataclass
class DetokenizerConfig:
    """Sizes of the flow model and the vocoder."""

    vocab_size: int = CODEBOOK_SIZE
    token_dim: int = 512
    n_mels: int = 80
    speaker_dim: int = 192
    encoder_layers: int = 6
    estimator_channels: int = 256
    flow_steps: int = 10  # Euler steps of the CFM ODE (CosyVoice's n_timesteps)
    hift_channels: int = 512
    upsample_rates: tuple[int, ...] = (8, 8)
    istft_n_fft: int = 16
    istft_hop: int = 4

    @classmethod
    def preset(cls, name: str) -> DetokenizerConfig:
        if name == "tiny":
            return cls(token_dim=32, encoder_layers=2, estimator_channels=32, flow_steps=4, hift_channels=32)
        if name == "ming-lite-omni-1.5":
            return cls()
        raise CodecError(f"unknown detokenizer preset {name!r}")


class ConvStack(nn.Module):
    """Residual 1-D convolutions (a stand-in for the Conformer encoder / U-Net estimator)."""

    def __init__(self, channels: int, layers: int, kernel: int = 5):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=kernel // 2) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        for conv in self.convs:
            x = x + torch.tanh(conv(x))
        return x


class FlowDecoder(nn.Module):
    """Conditional flow matching: codes (+ speaker) -> mel."""

    def __init__(self, cfg: DetokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.token_dim)
        self.spk_embed_affine_layer = nn.Linear(cfg.speaker_dim, cfg.n_mels)
        self.encoder = ConvStack(cfg.token_dim, cfg.encoder_layers)
        self.encoder_proj = nn.Linear(cfg.token_dim, cfg.n_mels)
        est = nn.Module()
        est.inp = nn.Conv1d(3 * cfg.n_mels + 1, cfg.estimator_channels, 3, padding=1)  # [x, mu, spk, t]
        est.body = ConvStack(cfg.estimator_channels, 2)
        est.out = nn.Conv1d(cfg.estimator_channels, cfg.n_mels, 3, padding=1)
        self.decoder = nn.Module()
        self.decoder.estimator = est

    def forward(self, codes: torch.Tensor, n_mel: int, noise: torch.Tensor, spk: torch.Tensor) -> torch.Tensor:
        h = self.input_embedding(codes).T[None]  # [1, Dtok, N]
        h = self.encoder(h)
        h = nn.functional.interpolate(h, size=n_mel, mode="linear", align_corners=False)  # [1, Dtok, Tm]
        mu = self.encoder_proj(h[0].T).T[None]  # [1, M, Tm]
        s = self.spk_embed_affine_layer(spk)[None, :, None].expand(-1, -1, n_mel)  # [1, M, Tm]
        x = noise[None]  # [1, M, Tm]
        est = self.decoder.estimator
        dt = 1.0 / self.cfg.flow_steps
        for i in range(self.cfg.flow_steps):  # Euler steps of dx/dt = v(x, mu, spk, t), t: 0 -> 1
            t = torch.full((1, 1, n_mel), i * dt)
            v = est.out(est.body(est.inp(torch.cat([x, mu, s, t], dim=1))))
            x = x + dt * v
        return x[0]  # [M, Tm]


class HiFTVocoder(nn.Module):
    """HiFT-style generator: mel -> upsampling convolutions -> magnitude/phase -> iSTFT."""

    def __init__(self, cfg: DetokenizerConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.hift_channels
        self.conv_pre = nn.Conv1d(cfg.n_mels, c, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for r in cfg.upsample_rates:
            self.ups.append(nn.ConvTranspose1d(c, c // 2, 2 * r, stride=r, padding=r // 2))
            c //= 2
            self.resblocks.append(ConvStack(c, 1, kernel=3))
        self.conv_post = nn.Conv1d(c, cfg.istft_n_fft + 2, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # [M, Tm] -> [S]
        x = self.conv_pre(mel[None])
        for up, rb in zip(self.ups, self.resblocks, strict=True):
            x = rb(up(nn.functional.leaky_relu(x, 0.1)))
        x = self.conv_post(nn.functional.leaky_relu(x))  # [1, nfft + 2, T']
        half = self.cfg.istft_n_fft // 2 + 1
        mag, phase = torch.exp(x[:, :half].clamp(max=6)), torch.sin(x[:, half:])
        spec = torch.polar(mag, math.pi * phase)[0]  # [nfft/2+1, T']
        win = torch.hann_window(self.cfg.istft_n_fft)
        return torch.istft(spec, self.cfg.istft_n_fft, self.cfg.istft_hop, self.cfg.istft_n_fft, win)


class MingDetokenizer(SpeechCodec):
    """Flow matching + HiFT decoder at 22.05 kHz (441 samples per 50 Hz code).

    Encoding (Ming's ``speech_tokenizer_v1.onnx``) is not bundled; ``encode`` raises.
    """

    name = "ming"
    sample_rate = SAMPLE_RATE

    def __init__(self, cfg: DetokenizerConfig, flow: FlowDecoder | None = None, hift: HiFTVocoder | None = None):
        self.cfg = cfg
        self.flow = (flow or FlowDecoder(cfg)).eval()
        self.hift = (hift or HiFTVocoder(cfg)).eval()
        self.speaker = torch.zeros(cfg.speaker_dim)
        g = torch.Generator().manual_seed(4321)
        self._noise = torch.randn(cfg.n_mels, 8192, generator=g)  # indexed by absolute mel frame

    @classmethod
    def build(cls, preset: str = "tiny", seed: int = 0) -> MingDetokenizer:
        """Random weights (seeded): for tests and for wiring before weights exist."""
        torch.manual_seed(seed)
        return cls(DetokenizerConfig.preset(preset))

    @classmethod
    def from_pretrained(cls, path: str | Path, preset: str = "ming-lite-omni-1.5") -> MingDetokenizer:
        """Load ``flow*.pt`` and ``hift*.pt`` from a ``talker/`` folder.

        Raises:
            CodecError: the files are missing or their tensors do not fit this architecture.
        """
        path = Path(path)
        if (path / "talker").is_dir():
            path = path / "talker"
        found = {}
        for kind, names in (("flow", FLOW_FILES), ("hift", HIFT_FILES)):
            files = [path / n for n in names if (path / n).is_file()]
            if not files:
                raise CodecError(f"no {' or '.join(names)} under {path}")
            found[kind] = files[0]
        det = cls(DetokenizerConfig.preset(preset))
        for kind, module in (("flow", det.flow), ("hift", det.hift)):
            state = torch.load(found[kind], map_location="cpu", weights_only=True)
            own = module.state_dict()
            fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            missing = [k for k in own if k not in fits]
            if missing:
                raise CodecError(f"{found[kind].name}: {len(missing)} of {len(own)} tensors missing or of another "
                                 f"shape (e.g. {missing[:3]}); this detokenizer implements a reduced architecture")
            module.load_state_dict(fits)
        return det

    def encode(self, wave: np.ndarray, sr: int = 16000) -> np.ndarray:
        check_wave(wave, sr)
        raise CodecError("the Ming backend decodes only; encode with the mel-vq codec or Ming's speech tokenizer")

    @torch.no_grad()
    def render(self, codes: np.ndarray, first: int, state: DecoderState) -> np.ndarray:
        n = len(codes)
        s = self.samples_per_code
        m0 = first * s // MEL_HOP  # absolute mel frame of the window start
        n_mel = -(-n * s // MEL_HOP)
        noise = self._noise[:, (m0 + torch.arange(n_mel)) % self._noise.shape[1]]  # [M, Tm]
        mel = self.flow(torch.from_numpy(codes), n_mel, noise, self.speaker)  # [M, Tm]
        wave = self.hift(mel)  # [~Tm * 256]
        out = torch.zeros(n * s)
        k = min(len(wave), n * s)
        out[:k] = wave[:k]
        return out.numpy().astype(np.float32)
