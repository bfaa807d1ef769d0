"""Voice prompts in Ming's ``data/spks/*.pt`` format (``luna_v2.pt``, ``eng_v2.pt``).

A voice prompt is a short recorded utterance, precomputed: its transcript (``prompt_text``), its
speech-tokenizer codes (``prompt_speech_token``, 25 Hz, 4096 codes; the talker's prefix), the same
codes and 80-bin mel for the detokenizer (``flow_prompt_speech_token``, ``prompt_speech_feat``), and
two 192-d CAM++ speaker vectors (``vp_emb`` for the talker's voice-print slot, ``flow_embedding``
for the flow decoder). Ming loads these files with ``torch.load`` and passes them as keyword
arguments; we read the same files (``weights_only``: plain tensors and a string) and check them.

Built-in voices: ``luna`` (Chinese, ``luna_v2.pt``) and ``eng`` (English, ``eng_v2.pt``), Ming's
own files (MIT, inclusionAI), shipped in ``audio/voices/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

VOICE_DIR = Path(__file__).parent / "voices"
BUILTIN = {"luna": "luna_v2.pt", "eng": "eng_v2.pt"}
SPEAKER_DIM = 192
MEL_BINS = 80
_KEYS = ("prompt_text", "prompt_speech_token", "flow_prompt_speech_token", "prompt_speech_feat", "vp_emb",
         "flow_embedding")


class VoiceError(ValueError):
    """A voice name or prompt file that cannot be used."""


@dataclass(frozen=True)
class VoicePrompt:
    """One voice prompt (see the module docstring).

    Attributes:
        name: the voice name or file stem.
        prompt_text: transcript of the prompt audio.
        prompt_tokens: int64 [N] speech codes (talker prefix).
        flow_prompt_tokens: int64 [N] speech codes (detokenizer prompt).
        prompt_mel: float32 [T, 80] mel frames of the prompt (detokenizer).
        vp_emb: float32 [192] speaker vector for the talker.
        flow_embedding: float32 [192] speaker vector for the detokenizer.
    """

    name: str
    prompt_text: str
    prompt_tokens: np.ndarray
    flow_prompt_tokens: np.ndarray
    prompt_mel: np.ndarray
    vp_emb: torch.Tensor
    flow_embedding: torch.Tensor
    builtin: bool = False

    def detokenizer_prompt(self) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """(prompt codes [N], prompt mel [T, 80], speaker vector [192]) for the detokenizer, as Ming's
        ``tts_job`` picks them: a built-in voice (a key of its ``spk_info``: luna, eng) brings its flow
        prompt and ``flow_embedding``; any other prompt gets no flow prompt and ``vp_emb``."""
        if self.builtin:
            return self.flow_prompt_tokens, self.prompt_mel, self.flow_embedding
        return np.zeros(0, np.int64), np.zeros((0, MEL_BINS), np.float32), self.vp_emb


def load_voice(voice: str | Path | None, default: str = "luna") -> VoicePrompt:
    """A built-in voice name (``luna``, ``eng``) or the path of a prompt file in Ming's format.

    Raises:
        VoiceError: an unknown name, a missing or unreadable file, a missing key or a bad shape.
    """
    voice = voice or default
    name = str(voice)
    if name in BUILTIN:
        return read_voice_file(VOICE_DIR / BUILTIN[name], name=name, builtin=True)
    path = Path(name)
    if path.suffix == ".pt" or path.exists():
        return read_voice_file(path)
    raise VoiceError(f"unknown voice {name!r}: use {', '.join(BUILTIN)} or the path of a Ming voice-prompt .pt file")


def read_voice_file(path: str | Path, *, name: str | None = None, builtin: bool = False) -> VoicePrompt:
    """Read one ``.pt`` prompt file (a dict of tensors plus ``prompt_text``)."""
    path = Path(path)
    if not path.is_file():
        raise VoiceError(f"voice prompt file {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle error, a truncated zip, a non-tensor object ...
        raise VoiceError(f"could not read voice prompt {path}: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict):
        raise VoiceError(f"voice prompt {path} holds a {type(raw).__name__}, expected a dict")
    missing = [k for k in _KEYS if k not in raw]
    if missing:
        raise VoiceError(f"voice prompt {path} lacks {', '.join(missing)}")
    if not isinstance(raw["prompt_text"], str) or not raw["prompt_text"].strip():
        raise VoiceError(f"voice prompt {path}: prompt_text must be a non-empty string")
    tokens = _codes(raw["prompt_speech_token"], "prompt_speech_token", path)
    flow_tokens = _codes(raw["flow_prompt_speech_token"], "flow_prompt_speech_token", path)
    mel = raw["prompt_speech_feat"]
    if not torch.is_tensor(mel) or mel.ndim != 3 or mel.shape[0] != 1 or mel.shape[2] != MEL_BINS:
        raise VoiceError(f"voice prompt {path}: prompt_speech_feat must be [1, T, {MEL_BINS}], got {_shape(mel)}")
    vecs = {}
    for key in ("vp_emb", "flow_embedding"):
        v = raw[key]
        if not torch.is_tensor(v) or v.numel() != SPEAKER_DIM or not v.is_floating_point():
            raise VoiceError(f"voice prompt {path}: {key} must hold {SPEAKER_DIM} floats, got {_shape(v)}")
        vecs[key] = v.reshape(SPEAKER_DIM).float()
    return VoicePrompt(name=name or path.stem, prompt_text=raw["prompt_text"], prompt_tokens=tokens,
                       flow_prompt_tokens=flow_tokens, prompt_mel=mel[0].float().numpy(), builtin=builtin, **vecs)


def _codes(t: object, key: str, path: Path) -> np.ndarray:
    if not torch.is_tensor(t) or t.ndim != 2 or t.shape[0] != 1 or t.shape[1] == 0 or t.is_floating_point():
        raise VoiceError(f"voice prompt {path}: {key} must be integer [1, N>0], got {_shape(t)}")
    return t[0].to(torch.int64).numpy()


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if torch.is_tensor(t) else type(t).__name__
