"""Ming-Lite-Omni 1.5's audio detokenizer: 50 Hz codec tokens -> 24 kHz speech, loaded from the release.

Release layout (``talker/`` of the checkpoint, as Ming's ``test_audio_tasks.py`` loads it):
``audio_detokenizer_stream.yaml`` (hyperpyyaml; read by ``ming_config``), ``flow_stream.pt`` (the flow
model's state dict under ``"model"``; files named ``*flow.pt`` / ``*cache.pt`` hold it bare, as in
Ming's ``AudioDetokenizerModel.load``) and ``hift_v2.pt`` (HiFT's state dict; a ``generator.`` prefix
is dropped; weight norm as ``parametrizations.weight.original0/1`` or the older ``weight_g/weight_v``).
Loading is strict: a missing file, an unreadable file, or any missing, unexpected or mis-shaped tensor
is a ``CodecError`` naming them. Modules: ``ming_flow`` (encoder + flow matching), ``ming_hift``
(vocoder), ``ming_stream`` (Ming's streaming caches).

``MingDetokenizer`` is also a ``SpeechCodec`` (decode only) so the TTS pipeline can use it:
``decode(codes)`` is Ming's offline path, ``stream_decoder()`` a ``MingStream`` with the voice set by
``set_voice``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audio.codec.base import CodecError, DecoderState, SpeechCodec, check_codes, check_wave
from audio.codec.ming_config import DetokConfig, one_line, parse_detok_yaml
from audio.codec.ming_flow import CausalFlow
from audio.codec.ming_hift import HiFT, bake_weight_norm
from audio.codec.ming_stream import MingStream, VoicePrompt

YAML_FILE = "audio_detokenizer_stream.yaml"
FLOW_FILE = "flow_stream.pt"
HIFT_FILE = "hift_v2.pt"
REAL_YAML = Path(__file__).parent / "assets" / "ming_detok_stream.yaml"
TINY_YAML = Path(__file__).parent / "assets" / "ming_detok_tiny.yaml"


def seeded_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights by name (numpy's legacy RandomState, stable across versions):
    tensors are drawn in sorted-name order; >= 2-D ones ~ N(0, 1/fan_in), weight-norm gains ~ 0.5 +
    N(0, 0.05^2) (HiFT's output stays mostly below its clamp), 1-D ``weight``/``alpha`` ~ 1 + N(0, 0.1^2),
    other 1-D ~ N(0, 0.02^2)."""
    rs = np.random.RandomState(seed)
    out = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        n = rs.standard_normal(shape)
        if name.endswith("original0"):
            val = 0.5 + 0.05 * n
        elif len(shape) == 1 and name.endswith(("weight", "alpha")):
            val = 1.0 + 0.1 * n
        elif len(shape) >= 2:
            val = n / np.sqrt(max(1, int(np.prod(shape[1:]))))
        else:
            val = 0.02 * n
        out[name] = torch.from_numpy(val.astype(np.float32))
    return out


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CodecError(f"{path}: missing (Ming's detokenizer needs {YAML_FILE}, {FLOW_FILE}, {HIFT_FILE})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated / foreign file
        raise CodecError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {one_line(e)})") from None


def _unwrap(path: Path, state: Any, kind: str) -> dict[str, torch.Tensor]:
    if kind == "flow" and not path.name.endswith(("flow.pt", "cache.pt")):
        if not isinstance(state, dict) or "model" not in state:
            raise CodecError(f"{path}: expected the flow state dict under 'model' (as Ming saves flow_stream.pt)")
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CodecError(f"{path}: not a state dict of tensors")
    if kind == "hift":
        state = {k.replace("generator.", ""): v for k, v in state.items()}
    # older torch saved weight norm as weight_g / weight_v; the parametrization keeps the same tensors
    return {k.replace(".weight_g", ".parametrizations.weight.original0")
             .replace(".weight_v", ".parametrizations.weight.original1"): v for k, v in state.items()}


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> int:
    """``load_state_dict`` after checking names and shapes; returns the tensor count.

    Raises:
        CodecError: missing / unexpected / mis-shaped tensors, named (first 5 of each) with counts.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shaped:
        parts = [f"{len(x)} {what}: {', '.join(x[:5])}{' ...' if len(x) > 5 else ''}"
                 for x, what in ((missing, "missing"), (unexpected, "unexpected"), (shaped, "mis-shaped")) if x]
        raise CodecError(f"{path}: does not fit the yaml's modules ({len(own)} expected; {'; '.join(parts)})")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return len(own)


class MingDetokenizer(SpeechCodec):
    """Flow matching + HiFT at 24 kHz (480 samples per 50 Hz token), Ming's streaming caches."""

    name = "ming"
    sample_rate = 24000

    def __init__(self, cfg: DetokConfig, flow: CausalFlow, hift: HiFT, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.device, self.dtype = torch.device(device), dtype
        self.tensors_loaded = 0
        self.tensors_expected = len(flow.state_dict()) + len(hift.state_dict())  # release naming, before baking
        bake_weight_norm(hift)
        self.flow = flow.eval().to(self.device, dtype)
        self.flow.decoder.noise = self.flow.decoder.noise.to(self.device)
        self.hift = hift.eval().to(self.device, torch.float32)  # torch.stft/istft need fp32; HiFT is small
        self.lookahead = cfg.flow.pre_lookahead_len
        self.voice = VoicePrompt.empty(cfg.flow.spk_embed_dim)
        self._talker_voices: dict[int, tuple[Any, VoicePrompt]] = {}  # id(talker voice) -> (it, converted)

    # -- construction -----------------------------------------------------------------------------
    @staticmethod
    def expected_shapes(cfg: DetokConfig) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """Names and shapes of the release's flow and HiFT tensors for ``cfg`` (built on the meta device)."""
        with torch.device("meta"):
            flow, hift = CausalFlow(cfg.flow), HiFT(cfg.hift)
        return ({k: tuple(v.shape) for k, v in flow.state_dict().items()},
                {k: tuple(v.shape) for k, v in hift.state_dict().items()})

    @classmethod
    def build(cls, preset: str = "tiny", seed: int = 0, **kwargs: Any) -> MingDetokenizer:
        """Random (seeded) weights: ``tiny`` (the fixtures' sizes) or ``real`` (Ming 1.5's sizes)."""
        yaml_path = {"tiny": TINY_YAML, "real": REAL_YAML, "ming-lite-omni-1.5": REAL_YAML}.get(preset)
        if yaml_path is None:
            raise CodecError(f"unknown detokenizer preset {preset!r} (tiny, real)")
        cfg = parse_detok_yaml(yaml_path)
        flow, hift = CausalFlow(cfg.flow), HiFT(cfg.hift)
        fs, hs = cls.expected_shapes(cfg)
        flow.load_state_dict(seeded_state_dict(fs, seed))
        hift.load_state_dict(seeded_state_dict(hs, seed + 1))
        return cls(cfg, flow, hift, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> MingDetokenizer:
        """Load ``audio_detokenizer_stream.yaml``, ``flow_stream.pt`` and ``hift_v2.pt`` from ``path``
        (a checkpoint root with ``talker/`` or the ``talker/`` folder itself).

        Raises:
            CodecError: a file is missing or unreadable, or its tensors do not match the yaml's modules.
        """
        path = Path(path)
        if (path / "talker" / YAML_FILE).is_file() or not (path / YAML_FILE).exists() and (path / "talker").is_dir():
            path = path / "talker"
        if not (path / YAML_FILE).is_file():
            raise CodecError(f"{path / YAML_FILE}: missing (Ming's detokenizer config)")
        cfg = parse_detok_yaml(path / YAML_FILE)
        flow, hift = CausalFlow(cfg.flow), HiFT(cfg.hift)
        n = 0
        for kind, module, name in (("flow", flow, FLOW_FILE), ("hift", hift, HIFT_FILE)):
            n += load_strict(module, _unwrap(path / name, _read(path / name), kind), path / name)
        det = cls(cfg, flow, hift, device=device, dtype=dtype)
        det.tensors_loaded = n
        return det

    # -- voice and synthesis ---------------------------------------------------------------------
    def set_voice(self, tokens: Any, mel: Any, embedding: Any) -> None:
        """The voice prompt used by ``decode`` and ``stream_decoder`` (``flow_prompt_speech_token``,
        ``prompt_speech_feat``, ``flow_embedding`` of a ``data/spks/*.pt`` file)."""
        self.voice = self.make_voice(tokens, mel, embedding)

    def make_voice(self, tokens: Any, mel: Any, embedding: Any) -> VoicePrompt:
        f = self.cfg.flow
        return VoicePrompt.from_tensors(tokens, mel, embedding, vocab_size=f.vocab_size,
                                        token_mel_ratio=f.token_mel_ratio, spk_dim=f.spk_embed_dim)

    def stream(self, voice: VoicePrompt | None = None, *, seed: int = 0) -> MingStream:
        """A streaming session: ``push(tokens)``, ``finish()``, ``cancel()``."""
        return MingStream(self, voice or self.voice, seed=seed)

    def synthesize(self, tokens: Any, voice: VoicePrompt | None = None, *, seed: int = 0) -> np.ndarray:
        """Ming's offline path (``tts_job`` with ``stream=False``): one render of all tokens."""
        s = self.stream(voice, seed=seed)
        codes = check_codes(tokens, self.cfg.flow.vocab_size)
        if codes.size == 0:
            raise CodecError("no codes to decode")
        s.tokens = codes.tolist()
        wave = s._render(s.tokens, streaming=False, finalize=True)
        s.reset()
        return wave

    # -- SpeechCodec -------------------------------------------------------------------------------
    def decode(self, codes: Any) -> np.ndarray:
        return self.synthesize(codes)

    def stream_decoder(self, voice: Any = None) -> MingStream:  # type: ignore[override]
        """A streaming session; ``voice`` is a talker voice (``audio.voices.VoicePrompt``) whose
        ``detokenizer_prompt()`` is what Ming's ``tts_job`` hands the detokenizer (else ``self.voice``)."""
        if voice is None:
            return self.stream()
        # A voice prompt is fixed: convert it once, not every sentence. The entry holds the talker's voice
        # too, so its id is not reused while the entry lives.
        if id(voice) not in self._talker_voices:
            self._talker_voices[id(voice)] = (voice, self.make_voice(*voice.detokenizer_prompt()))
        return self.stream(self._talker_voices[id(voice)][1])

    @contextmanager
    def streaming(self) -> Iterator[MingStream]:  # type: ignore[override]
        dec = self.stream()
        try:
            yield dec
        finally:
            dec.reset()

    def encode(self, wave: np.ndarray, sr: int = 16000) -> np.ndarray:
        check_wave(wave, sr)
        raise CodecError("the Ming backend decodes only; encode with the mel-vq codec or Ming's speech tokenizer")

    def render(self, codes: np.ndarray, first: int, state: DecoderState) -> np.ndarray:
        raise CodecError("the Ming detokenizer streams with its own caches (MingStream), not block windows")


def write_random_release(preset: str, folder: Path) -> Path:
    """Seeded random weights of ``preset`` (``tiny`` or ``real``) written in Ming's release layout
    (``audio_detokenizer_stream.yaml``, ``flow_stream.pt`` with the weights under ``model``, ``hift_v2.pt``)."""
    import shutil

    yaml_path = TINY_YAML if preset == "tiny" else REAL_YAML
    flow, hift = MingDetokenizer.expected_shapes(parse_detok_yaml(yaml_path))
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(yaml_path, folder / "audio_detokenizer_stream.yaml")
    torch.save({"model": seeded_state_dict(flow, 0)}, folder / "flow_stream.pt")
    torch.save(seeded_state_dict(hift, 1), folder / "hift_v2.pt")
    return folder
