"""The lightweight codec: vector quantisation of log-mel frames, decoded by Griffin-Lim.

No neural weights: the codebook (4096 log-mel centroids) is fit by ``scripts/train_codec.py`` with
k-means on speech it synthesises with espeak-ng, and ships as ``assets/mel_vq_codebook.npy``.
Frames are 50 Hz (hop 320 at 16 kHz), so one code is one frame.

Legend: N frames/codes, M mel bins, K codebook entries, Fq linear frequency bins, T samples.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from audio.codec.base import (
    CODEBOOK_SIZE,
    INPUT_RATE,
    CodecError,
    DecoderState,
    SpeechCodec,
    check_wave,
)

ASSET = Path(__file__).parent / "assets" / "mel_vq_codebook.npy"
HOP = 320  # 16 kHz / 50 Hz
WIN = 640  # 40 ms analysis window, two hops
N_FFT = 1024
N_MELS = 80
LOG_FLOOR = 1e-5  # log(mel + floor): silence maps to about -11.5
GL_ITERS = 24  # Griffin-Lim iterations per window; more sounds barely better, costs linearly
GL_MOMENTUM = 0.99  # "fast Griffin-Lim" (Perraudin et al. 2013), as torchaudio's default
STICKINESS = 24.0  # keep the previous code while it is within this squared log-mel distance of the
# nearest one: runs of equal codes make the BPE rate on held-out speech drop from ~0.31 to ~0.38
# for a ~1% larger quantisation error (a rate-distortion knob; see docs/speech.md)


def _mel_fb() -> torch.Tensor:
    import torchaudio

    return torchaudio.functional.melscale_fbanks(
        N_FFT // 2 + 1, 0.0, INPUT_RATE / 2, N_MELS, INPUT_RATE, norm="slaney", mel_scale="slaney"
    )  # [Fq, M]


def log_mel(wave: np.ndarray) -> np.ndarray:
    """16 kHz wave [T] -> log-mel frames [N, M] with ``N = T // 320`` (frame i centred at i * 320)."""
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    n = len(wave) // HOP
    spec = torch.stft(x, N_FFT, HOP, WIN, torch.hann_window(WIN), center=True, return_complex=True)
    power = spec.abs().pow(2)[:, :n]  # [Fq, N]
    mel = _mel_fb().T @ power  # [M, N]
    return torch.log(mel + LOG_FLOOR).T.numpy().astype(np.float32)


class MelVQCodec(SpeechCodec):
    """VQ over 80-bin log-mel frames (4096 codes, 50 Hz), Griffin-Lim decoding at 16 kHz.

    Args:
        codebook: ``[4096, 80]`` log-mel centroids; defaults to the committed asset.
        gl_iters: Griffin-Lim iterations per decoded window.
        stickiness: hysteresis of the quantiser (0 = plain nearest neighbour).
    """

    name = "mel-vq"
    sample_rate = INPUT_RATE

    def __init__(self, codebook: np.ndarray | None = None, gl_iters: int = GL_ITERS,
                 stickiness: float = STICKINESS):
        if codebook is None:
            if not ASSET.exists():
                raise CodecError(f"codebook asset {ASSET} is missing; run scripts/train_codec.py")
            codebook = np.load(ASSET)
        codebook = np.asarray(codebook, dtype=np.float32)
        if codebook.shape != (CODEBOOK_SIZE, N_MELS):
            raise CodecError(f"codebook must be [{CODEBOOK_SIZE}, {N_MELS}], got {codebook.shape}")
        self.codebook = torch.from_numpy(codebook)  # [K, M]
        self._cb_sq = (self.codebook**2).sum(1)  # [K]
        self.gl_iters = gl_iters
        self.stickiness = stickiness
        fb = _mel_fb()  # [Fq, M]
        self._inv_fb = torch.linalg.pinv(fb.T)  # [Fq, M]: mel power -> linear power
        win = torch.hann_window(WIN).numpy().astype(np.float64)
        self._window = np.pad(win, ((N_FFT - WIN) // 2, N_FFT - WIN - (N_FFT - WIN) // 2))  # as torch.stft centres it
        # A fixed table of initial phases, indexed by absolute frame number, so that a window's
        # rendering does not depend on how the stream was cut into pushes.
        self._phase_table = np.random.default_rng(1234).uniform(0, 2 * np.pi, (4096, N_FFT // 2 + 1))  # [4096, Fq]

    # -- encoding --------------------------------------------------------------------------------
    def quantize(self, frames: np.ndarray) -> np.ndarray:
        """Log-mel frames [N, M] -> codes [N]: nearest entry (squared L2), with hysteresis."""
        f = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        codes = []
        for chunk in torch.split(f, 4096):
            d = (self._cb_sq[None, :] - 2.0 * chunk @ self.codebook.T).numpy()  # [n, K] (|f|^2 is constant)
            best = d.argmin(1)
            if self.stickiness > 0:
                prev = codes[-1] if codes else -1
                for i, b in enumerate(best):
                    if prev >= 0 and d[i, prev] - d[i, b] <= self.stickiness:
                        best[i] = prev
                    prev = int(best[i])
            codes.extend(int(b) for b in best)
        return np.asarray(codes, dtype=np.int64)

    def encode(self, wave: np.ndarray, sr: int = INPUT_RATE) -> np.ndarray:
        """16 kHz (or ``sr``, resampled) mono wave -> codes [N] in ``[0, 4096)``.

        Raises:
            CodecError: empty, non-mono or non-finite audio, or audio shorter than one frame.
        """
        wave = check_wave(wave, sr)
        if sr != INPUT_RATE:
            from audio.dsp import resample

            wave = resample(wave, sr, INPUT_RATE)
        if len(wave) < HOP:
            raise CodecError(f"audio shorter than one 20 ms frame ({len(wave)} samples at 16 kHz)")
        return self.quantize(log_mel(wave))

    # -- decoding --------------------------------------------------------------------------------
    def magnitudes(self, codes: np.ndarray) -> torch.Tensor:
        """Codes [N] -> linear magnitude spectrogram [Fq, N]."""
        mel = torch.exp(self.codebook[torch.from_numpy(codes)]) - LOG_FLOOR  # [N, M]
        power = (self._inv_fb @ mel.clamp_min(0).T).clamp_min(0)  # [Fq, N]
        return power.sqrt()

    def render(self, codes: np.ndarray, first: int, state: DecoderState) -> np.ndarray:
        n = len(codes)
        mag = self.magnitudes(codes).numpy().T  # [n, Fq]
        phase = self._phase_table[(first + np.arange(n)) % len(self._phase_table)]  # [n, Fq]
        cached = state.cache.get("phase")  # (first frame, [n', Fq]) from the previous window
        if cached is not None:
            c_first, c_phase = cached
            lo, hi = max(first, c_first), min(first + n, c_first + len(c_phase))
            if hi > lo:
                phase[lo - first: hi - first] = c_phase[lo - c_first: hi - c_first]
        spec = self._griffin_lim(mag, phase)  # [n, Fq]
        state.cache["phase"] = (first, np.angle(spec))
        return _istft(spec, self._window, n * HOP)

    def _griffin_lim(self, mag: np.ndarray, phase: np.ndarray) -> np.ndarray:
        # numpy (pocketfft, one thread): these FFTs are small, and torch's intra-op threads spin
        # against each other on a busy machine (10x slower with 2 threads under load)
        n = len(mag)
        spec = mag * np.exp(1j * phase)
        prev = np.zeros_like(spec)
        for _ in range(self.gl_iters):
            rebuilt = _stft(_istft(spec, self._window, n * HOP), self._window)[:n]
            accel = rebuilt - GL_MOMENTUM * prev
            prev = rebuilt
            spec = mag * _unit(accel)
        return spec


def _unit(z: np.ndarray) -> np.ndarray:
    """``exp(1j * angle(z))`` without the trigonometry (angle 0 where ``z == 0``, as np.angle)."""
    a = np.abs(z)
    zero = a == 0
    if zero.any():
        z = np.where(zero, 1.0, z)
        a = np.where(zero, 1.0, a)
    return z / a


@lru_cache(maxsize=16)
def _frame_index(n: int) -> np.ndarray:
    """Sample indices of ``n`` analysis frames in the reflect-padded signal: [n, N_FFT]."""
    return np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]


@lru_cache(maxsize=16)
def _ola_norm(n: int, window_key: bytes) -> np.ndarray:
    """Overlap-added squared window of ``n`` frames, floored: [N_FFT + HOP * (n - 1)]."""
    window = np.frombuffer(window_key, dtype=np.float64)
    return np.maximum(_overlap_add(np.broadcast_to(window**2, (n, N_FFT))), 1e-8)


def _overlap_add(frames: np.ndarray) -> np.ndarray:
    """Frames [n, N_FFT] placed HOP apart and summed -> [N_FFT + HOP * (n - 1)]."""
    n = len(frames)
    k = -(-N_FFT // HOP)  # hops one frame spans (4)
    padded = np.zeros((n, k * HOP))
    padded[:, :N_FFT] = frames
    blocks = padded.reshape(n, k, HOP)
    out = np.zeros((n + k - 1, HOP))
    for j in range(k):  # k vectorised adds instead of n sliced ones
        out[j: j + n] += blocks[:, j]
    return out.reshape(-1)[: N_FFT + HOP * (n - 1)]


def _stft(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """torch.stft(center=True, reflect padding) in numpy: [T] -> [1 + T // HOP, Fq]."""
    pad = N_FFT // 2
    xp = np.pad(x, pad, mode="reflect")
    n = 1 + len(x) // HOP
    return np.fft.rfft(xp[_frame_index(n)] * window, axis=1)


def _istft(spec: np.ndarray, window: np.ndarray, length: int) -> np.ndarray:
    """Inverse of ``_stft`` (overlap-add, window-square normalised) -> [length] float32."""
    n = len(spec)
    frames = np.fft.irfft(spec, n=N_FFT, axis=1) * window  # [n, N_FFT]
    out = _overlap_add(frames)
    norm = _ola_norm(n, window.tobytes())
    pad = N_FFT // 2
    out = out[pad: pad + length] / norm[pad: pad + length]
    if len(out) < length:
        out = np.pad(out, (0, length - len(out)))
    return out.astype(np.float32)
