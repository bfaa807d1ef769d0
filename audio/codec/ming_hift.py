"""Ming's HiFT vocoder (``hift_v2.pt``): 80-bin mel at 50 Hz -> waveform at 24 kHz.

HiFTNet = neural source filter + iSTFTNet. ``f0_predictor`` (5 weight-normed convs + ELU, a linear
head, |.|) estimates F0 per mel frame; it is repeated to the sample rate (x480) and the source module
(Ming's ``SourceModuleHnNSF2`` / ``SineGen2`` used at 24 kHz) turns it into 9 harmonics with a random
initial phase per harmonic, integrates phase at frame rate (linear down- and up-sampling), adds noise
(voiced: 0.003, unvoiced: 0.1 / 3 amplitude) and mixes them by a linear layer + tanh. The STFT of
that source (n_fft 16, hop 4) is injected after each upsampling stage; the generator
(``conv_pre``, ``ups`` with ``resblocks`` (Snake activations), ``conv_post``) predicts log-magnitude
and phase, and an iSTFT gives the waveform, clamped to +-0.99.

Randomness (initial phases and noise) is drawn from the ``generator`` passed in, in Ming's order:
``rand(B, 9)``, ``randn_like`` of the [B, L, 9] harmonics and of the [B, L, 1] voicing (the last one Ming draws and discards), so a
generator seeded like Ming's global RNG reproduces Ming's waveform. Weight-normed convs are declared
with ``torch.nn.utils.parametrizations.weight_norm`` so the state dict keys equal Ming's.
Legend: B batch, T mel frames, L = T * 480 samples, C channels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from audio.codec.ming_config import HiftConfig


def _pad(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class Snake(nn.Module):
    """x + 1/alpha * sin^2(alpha * x), alpha per channel (linear scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha[None, :, None]
        return x + (1.0 / (a + 1e-9)) * torch.sin(x * a).pow(2)


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, 1, dilation=d,
                                                          padding=_pad(kernel, d))) for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, 1, padding=_pad(kernel)))
                                    for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2, strict=True):
            x = c2(a2(c1(a1(x)))) + x
        return x


class F0Predictor(nn.Module):
    """Ming's ``ConvRNNF0Predictor``: mel [B, 80, T] -> F0 [B, T] (Hz, >= 0)."""

    def __init__(self, cin: int, cond: int, num_class: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [weight_norm(nn.Conv1d(cin if i == 0 else cond, cond, 3, padding=1)), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond, num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(self.classifier(self.condnet(x).transpose(1, 2)).squeeze(-1))


class SineSource(nn.Module):
    """``SourceModuleHnNSF2``: F0 at sample rate [B, L, 1] -> excitation [B, L, 1]."""

    def __init__(self, cfg: HiftConfig, upsample_scale: int):
        super().__init__()
        self.cfg, self.scale = cfg, upsample_scale
        self.l_linear = nn.Linear(cfg.nb_harmonics + 1, 1)

    def forward(self, f0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        cfg, dim = self.cfg, self.cfg.nb_harmonics + 1
        with torch.no_grad():
            harmonics = torch.arange(1, dim + 1, dtype=torch.float32, device=f0.device)
            rad = (f0 * harmonics / cfg.sampling_rate) % 1  # [B, L, dim] cycles per sample
            init = torch.rand(f0.shape[0], dim, generator=generator, device=f0.device)
            init[:, 0] = 0
            rad[:, 0, :] = rad[:, 0, :] + init
            rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / self.scale, mode="linear").transpose(1, 2)
            phase = torch.cumsum(rad, dim=1) * 2 * np.pi
            phase = F.interpolate(phase.transpose(1, 2) * self.scale, scale_factor=self.scale,
                                  mode="linear").transpose(1, 2)
            sines = torch.sin(phase) * cfg.nsf_alpha
            uv = (f0 > cfg.nsf_voiced_threshold).float()
            amp = uv * cfg.nsf_sigma + (1 - uv) * cfg.nsf_alpha / 3
            # Ming's randn_like: same shape AND strides (a non-contiguous tensor draws its normals in
            # another order than a contiguous one), so draw into empty_like the same way
            noise = amp * torch.empty_like(sines).normal_(generator=generator)
            sines = sines * uv + noise
            torch.empty_like(uv).normal_(generator=generator)  # Ming's unused noise branch (randn_like(uv))
        return torch.tanh(self.l_linear(sines))


class HiFT(nn.Module):
    """Ming's ``HiFTGenerator`` (inference)."""

    def __init__(self, cfg: HiftConfig):
        super().__init__()
        self.cfg = cfg
        base, nfft = cfg.base_channels, cfg.n_fft
        self.upsample_scale = int(np.prod(cfg.upsample_rates)) * cfg.hop_len
        self.m_source = SineSource(cfg, self.upsample_scale)
        self.conv_pre = weight_norm(nn.Conv1d(cfg.in_channels, base, 7, 1, padding=3))
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(base // 2**i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)))
        self.source_downs, self.source_resblocks = nn.ModuleList(), nn.ModuleList()
        rates = np.cumprod([1, *cfg.upsample_rates[::-1][:-1]])[::-1]
        for i, (u, k, d) in enumerate(zip(rates, cfg.source_resblock_kernel_sizes,
                                          cfg.source_resblock_dilation_sizes, strict=False)):
            ch = base // 2 ** (i + 1)
            u = int(u)
            conv = nn.Conv1d(nfft + 2, ch, 1, 1) if u == 1 else nn.Conv1d(nfft + 2, ch, u * 2, u, padding=u // 2)
            self.source_downs.append(conv)
            self.source_resblocks.append(ResBlock(ch, k, tuple(d)))
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, tuple(d)) for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True))
        self.conv_post = weight_norm(nn.Conv1d(base // 2 ** len(self.ups), nfft + 2, 7, 1, padding=3))
        self.f0_predictor = F0Predictor(cfg.f0_in_channels, cfg.f0_cond_channels, cfg.f0_num_class)
        self.register_buffer("window", torch.hann_window(nfft, periodic=True), persistent=False)

    def _decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        cfg, nk = self.cfg, len(self.cfg.resblock_kernel_sizes)
        spec = torch.stft(source[:, 0], cfg.n_fft, cfg.hop_len, cfg.n_fft, window=self.window, return_complex=True)
        s = torch.cat([spec.real, spec.imag], dim=1)  # [B, nfft + 2, L / hop + 1]
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, cfg.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s))
            xs = self.resblocks[i * nk](x)
            for j in range(1, nk):
                xs = xs + self.resblocks[i * nk + j](x)
            x = xs / nk
        x = self.conv_post(F.leaky_relu(x))
        half = cfg.n_fft // 2 + 1
        mag = torch.clip(torch.exp(x[:, :half]), max=1e2)
        phase = torch.sin(x[:, half:])
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        wave = torch.istft(spec, cfg.n_fft, cfg.hop_len, cfg.n_fft, window=self.window)
        return torch.clamp(wave, -cfg.audio_limit, cfg.audio_limit)

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor, cache_source: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, 80, T] (+ the previous chunk's source tail [B, 1, S]) -> (wave [B, L], source [B, 1, L])."""
        f0 = self.f0_predictor(mel)
        # Ming's nn.Upsample(scale_factor=480) (nearest; its float index rounding differs from an
        # exact repeat at some frame edges, so use the same op) -> [B, L, 1]
        f0 = F.interpolate(f0[:, None], scale_factor=float(self.upsample_scale), mode="nearest").transpose(1, 2)
        source = self.m_source(f0, generator).transpose(1, 2)  # [B, 1, L]
        if cache_source is not None and cache_source.shape[2]:
            source[:, :, :cache_source.shape[2]] = cache_source
        return self._decode(mel, source), source


def bake_weight_norm(module: nn.Module) -> None:
    """Fold every weight-norm parametrization into a plain weight (same values, faster inference)."""
    from torch.nn.utils import parametrize

    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)

