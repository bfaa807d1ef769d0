"""Prompt processing for the thinker: chat format, media placeholders, MRoPE positions, modality ids.

Ming's chat format::

    <role>SYSTEM</role>{system}<role>HUMAN</role>{user}<role>ASSISTANT</role>{reply}<|endoftext|><role>HUMAN</role>...

Media expand in place to ``<image><imagePatch>xN</image>\\n`` (N = t*h*w/4 of the patch grid),
``<video><imagePatch>xN</video>\\n`` and ``<audio><audioPatch>xN</audio>`` (N = 25 Hz tokens).
Position ids follow Ming's ``get_rope_index`` (``3D``) or ``get_t_scale_rope_index`` (``video_rope``);
audio placeholders are numbered like text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from audio.encoder import MIN_SAMPLES, SAMPLE_RATE, AudioTooShortError, audio_token_count, log_mel_128
from omni_agent.model.config import ThinkerConfig
from omni_agent.model.thinker import PlaceholderMismatchError
from vision.preprocess import MAX_PIXELS, MIN_PIXELS, ImageError, preprocess_frames, preprocess_image

ASSETS = Path(__file__).resolve().parent / "assets"
TINY_TOKENIZER = ASSETS / "tiny_tokenizer.json"

ROLE_PREFIX = {"system": "<role>SYSTEM</role>", "user": "<role>HUMAN</role>", "assistant": "<role>ASSISTANT</role>"}
EOS = "<|endoftext|>"
IMAGE_PATCH, IMAGE_START, IMAGE_END = "<imagePatch>", "<image>", "</image>"
VIDEO_START, VIDEO_END = "<video>", "</video>"
AUDIO_PATCH, AUDIO_START, AUDIO_END = "<audioPatch>", "<audio>", "</audio>"
MODALITY = {"text": 0, "image": 1, "video": 1, "audio": 2}

DIALECTS = ("Cantonese", "Sichuanese", "Shanghainese", "Minnan", "Hokkien", "Wu", "Hakka", "Northeastern Mandarin")


class PromptError(ValueError):
    """A message list that cannot be turned into a prompt, with a message naming the problem."""


@dataclass
class MMItem:
    """One media item of a prompt: where its placeholders are and what the encoder needs."""

    kind: Literal["image", "video", "audio"]
    offset: int
    """Index in ``input_ids`` of the first placeholder token."""
    length: int
    """Number of placeholder tokens (= embeddings the encoder produces)."""
    content_hash: str
    """sha256 of the raw media (pixels/samples), the key for prefix caching."""
    pixel_values: torch.Tensor | None = None
    """``[P, 1176]`` patches (image/video)."""
    grid_thw: torch.Tensor | None = None
    """``[1, 3]`` patch grid (t, h, w) before the 2x2 merge (image/video)."""
    second_per_grid: float | None = None
    """Seconds covered by one temporal patch (video)."""
    mel: torch.Tensor | None = None
    """``[128, F]`` log-mel (audio)."""
    num_samples: int | None = None
    """16 kHz samples of the audio."""


@dataclass
class ProcessedPrompt:
    """A tokenised prompt ready for ``Thinker.embed`` and ``Thinker.forward``."""

    input_ids: torch.Tensor
    """``[T]`` token ids."""
    position_ids: torch.Tensor
    """``[3, T]`` MRoPE ids (rows t, h, w)."""
    modality_ids: torch.Tensor
    """``[T]`` 0 text, 1 image/video patch, 2 audio patch (selects the MoE router)."""
    rope_delta: int
    """``max position + 1 - T``: generated token k (0-based) gets position ``T + k + rope_delta``."""
    mm_items: list[MMItem] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def content_hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


def asr_messages(audio: np.ndarray, language_or_dialect: str | None = None) -> list[dict[str, Any]]:
    """Messages asking for a transcript, naming the language/dialect first (Ming's ASR style).

    With ``language_or_dialect`` (e.g. ``"Cantonese"``) the instruction tells the model which one it is;
    without, the model is asked to name it before transcribing.
    """
    if language_or_dialect:
        kind = "dialect" if language_or_dialect in DIALECTS else "language"
        instruction = (f"The following speech is in {language_or_dialect}. First state the {kind} "
                       f"({language_or_dialect}), then transcribe the speech exactly.")
    else:
        instruction = ("First name the language or dialect of the following speech, "
                       "then transcribe the speech exactly.")
    return [{"role": "user", "content": [{"type": "text", "text": instruction}, {"type": "audio", "audio": audio}]}]


class OmniProcessor:
    """Turns chat messages with media into a ``ProcessedPrompt`` (token ids, MRoPE positions, media items)."""

    def __init__(self, tokenizer: Any, config: ThinkerConfig | None = None, *, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS, time_aligned_video: bool = False) -> None:
        """Args:
            tokenizer: a HF ``tokenizers.Tokenizer`` containing Ming's special tokens.
            config: thinker config (rope type, merge size, tokens per second); the real preset when None.
            min_pixels: smallest image area after resizing.
            max_pixels: largest image area after resizing (per video frame too).
            time_aligned_video: scale video t ids by seconds per temporal patch x tokens_per_second
                (Ming's ``second_per_grid_ts`` variant); off in Ming's own inference code.
        """
        self.tokenizer = tokenizer
        self.config = config or ThinkerConfig.preset("ming-lite-omni-1.5")
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.time_aligned_video = time_aligned_video
        self.merge = self.config.vision.spatial_merge_size
        self.ids: dict[str, int] = {}
        for tok in (EOS, IMAGE_PATCH, IMAGE_START, IMAGE_END, VIDEO_START, VIDEO_END, AUDIO_PATCH, AUDIO_START,
                    AUDIO_END):
            tid = tokenizer.token_to_id(tok)
            if tid is None:
                raise PromptError(f"tokenizer lacks Ming's special token {tok!r}")
            self.ids[tok] = tid
        self._newline = self._encode("\n")

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def for_preset(cls, name: str, **kwargs: Any) -> OmniProcessor:
        """Processor for a preset without a checkpoint (both presets use the shipped tiny tokenizer)."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(TINY_TOKENIZER)), ThinkerConfig.preset(name), **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> OmniProcessor:
        """Processor from a checkpoint folder: ``tokenizer.json``, ``config.json``, ``preprocessor_config.json``.

        Raises:
            FileNotFoundError: the folder has no tokenizer.json.
        """
        from tokenizers import Tokenizer

        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {path}")
        cfg = None
        if (path / "config.json").is_file():
            cfg = ThinkerConfig.from_ming_dict(json.loads((path / "config.json").read_text()))
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            p = json.loads(pre.read_text())
            kwargs.setdefault("min_pixels", int(p.get("min_pixels", MIN_PIXELS)))
            kwargs.setdefault("max_pixels", int(p.get("max_pixels", MAX_PIXELS)))
        return cls(Tokenizer.from_file(str(tok_file)), cfg, **kwargs)

    @property
    def eos_token_id(self) -> int:
        return self.ids[EOS]

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids if text else []

    # ----------------------------------------------------------------------------- prompt building
    def __call__(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> ProcessedPrompt:
        """Tokenise ``messages`` (system/user/assistant, text/image/video/audio parts).

        Raises:
            PromptError: unknown role or part type, or nothing to process.
            vision.preprocess.ImageError: an empty or malformed image/video.
            audio.encoder.AudioTooShortError: audio shorter than one 25 Hz token (40 ms).
        """
        if not messages:
            raise PromptError("no messages to process")
        b = _Builder()
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role not in ROLE_PREFIX:
                raise PromptError(f"message {i} has unknown role {role!r} (expected system, user or assistant)")
            b.text(self._encode(ROLE_PREFIX[role]))
            content = msg.get("content", "")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
            for part in parts:
                self._add_part(b, part, i)
            if role == "assistant":
                b.text([self.eos_token_id])
        if add_generation_prompt:
            b.text(self._encode(ROLE_PREFIX["assistant"]))
        prompt = self._finish(b)
        self.check_placeholders(prompt)
        return prompt

    def _add_part(self, b: _Builder, part: dict[str, Any], msg_index: int) -> None:
        kind = part.get("type")
        if kind == "text":
            b.text(self._encode(str(part.get("text", ""))))
        elif kind == "image":
            img = part.get("image")
            if img is None:
                raise ImageError(f"message {msg_index}: image part has no image")
            pv, grid = preprocess_image(img, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            n = int(grid.prod()) // self.merge**2
            arr = np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)
            item = MMItem("image", 0, n, content_hash("image", str(arr.shape), arr.tobytes()),
                          pixel_values=pv, grid_thw=grid)
            b.media([self.ids[IMAGE_START]], item, self.ids[IMAGE_PATCH], [self.ids[IMAGE_END], *self._newline])
        elif kind == "video":
            clip = part.get("video")
            frames = getattr(clip, "frames", clip)
            if frames is None or len(frames) == 0:
                raise ImageError(f"message {msg_index}: video has no frames")
            pv, grid = preprocess_frames(frames, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            n = int(grid.prod()) // self.merge**2
            spg = getattr(clip, "second_per_grid", None)  # a VideoClip knows its group spacing exactly
            if spg is None:
                stamps = list(getattr(clip, "timestamps", None) or [])
                if len(stamps) >= 2 and stamps[-1] > stamps[0]:  # sampled frame spacing, not the source fps
                    fps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
                else:
                    fps = float(getattr(clip, "fps", 0) or 2.0)
                spg = self.config.vision.temporal_patch_size / fps
            h = getattr(clip, "content_hash", None) or content_hash(
                "video", *(np.ascontiguousarray(f).tobytes() for f in frames))
            item = MMItem("video", 0, n, h, pixel_values=pv, grid_thw=grid, second_per_grid=float(spg))
            b.media([self.ids[VIDEO_START]], item, self.ids[IMAGE_PATCH], [self.ids[VIDEO_END], *self._newline])
        elif kind == "audio":
            wave = np.asarray(part.get("audio"), dtype=np.float32).reshape(-1)
            n = audio_token_count(wave.size, self.config.audio.ds_kernel_size, self.config.audio.ds_stride)
            if wave.size < MIN_SAMPLES or n == 0:
                raise AudioTooShortError(
                    f"message {msg_index}: audio is {wave.size} samples ({wave.size / SAMPLE_RATE * 1000:.1f} ms), "
                    f"shorter than one audio token ({MIN_SAMPLES} samples = 40 ms at 16 kHz)")
            item = MMItem("audio", 0, n, content_hash("audio", wave.tobytes()), mel=log_mel_128(wave),
                          num_samples=int(wave.size))
            b.media([self.ids[AUDIO_START]], item, self.ids[AUDIO_PATCH], [self.ids[AUDIO_END]])
        else:
            raise PromptError(f"message {msg_index}: unknown content part type {kind!r}")

    def _finish(self, b: _Builder) -> ProcessedPrompt:
        """Assign MRoPE positions run by run (Ming's get_rope_index / get_t_scale_rope_index)."""
        video_rope = self.config.llm.rope_type == "video_rope"
        tps = self.config.vision.tokens_per_second
        pos_rows: list[torch.Tensor] = []
        next_pos = 0
        for run in b.runs:
            if run.item is None or run.item.kind == "audio":  # text and audio: sequential on all rows
                p = torch.arange(next_pos, next_pos + len(run.ids)).expand(3, -1)
                next_pos += len(run.ids)
                pos_rows.append(p)
                continue
            item = run.item
            t, h, w = (int(v) for v in item.grid_thw.reshape(-1))
            gh, gw = h // self.merge, w // self.merge
            t_idx = torch.arange(t).view(-1, 1, 1).expand(t, gh, gw).reshape(-1)
            h_idx = torch.arange(gh).view(1, -1, 1).expand(t, gh, gw).reshape(-1)
            w_idx = torch.arange(gw).view(1, 1, -1).expand(t, gh, gw).reshape(-1)
            spg = item.second_per_grid if (item.kind == "video" and self.time_aligned_video) else None
            if video_rope:
                # Ming's get_t_scale_rope_index: t stepped by 2 (x seconds per grid when time-aligned),
                # h/w centred on the frame and riding on t ("body-diagonal symmetry").
                t_pos = (t_idx * (spg if spg is not None else 1.0) * 2.0).long() + next_pos
                p = torch.stack([t_pos, h_idx - (gh - 1) // 2 + t_pos, w_idx - (gw - 1) // 2 + t_pos])
                next_pos = int(p[0].max()) + 1
            else:
                t_pos = (t_idx * spg * tps).long() if spg is not None else t_idx
                p = torch.stack([t_pos, h_idx, w_idx]) + next_pos
                next_pos = int(p.max()) + 1
            pos_rows.append(p)
        input_ids = torch.tensor(b.ids, dtype=torch.long)
        position_ids = torch.cat(pos_rows, dim=1) if pos_rows else torch.zeros(3, 0, dtype=torch.long)
        modality = torch.tensor(b.modality, dtype=torch.long)
        return ProcessedPrompt(input_ids=input_ids, position_ids=position_ids.long(), modality_ids=modality,
                               rope_delta=next_pos - len(b.ids), mm_items=b.items)

    def decode_positions(self, rope_delta: int, start: int, n: int) -> torch.Tensor:
        """MRoPE ids ``[3, n]`` for generated tokens at sequence indices ``start .. start+n-1``."""
        return (torch.arange(start, start + n) + rope_delta).expand(3, -1).clone()

    def check_placeholders(self, prompt: ProcessedPrompt) -> None:
        """Every media item must own exactly its placeholder run, and no placeholder may be orphaned.

        Raises:
            PlaceholderMismatchError: a run of the wrong token or length, or stray placeholder tokens
                (e.g. typed into the text) that no media item accounts for.
        """
        ids = prompt.input_ids
        for item in prompt.mm_items:
            tok = self.ids[AUDIO_PATCH] if item.kind == "audio" else self.ids[IMAGE_PATCH]
            run = ids[item.offset:item.offset + item.length]
            if run.numel() != item.length or not bool((run == tok).all()):
                raise PlaceholderMismatchError(
                    f"{item.kind} item at offset {item.offset} expects {item.length} placeholder tokens")
        for name, kinds in ((IMAGE_PATCH, ("image", "video")), (AUDIO_PATCH, ("audio",))):
            found = int((ids == self.ids[name]).sum())
            expected = sum(it.length for it in prompt.mm_items if it.kind in kinds)
            if found != expected:
                raise PlaceholderMismatchError(
                    f"prompt has {found} {name} tokens but its media need {expected}")


@dataclass
class _Run:
    ids: list[int]
    item: MMItem | None = None


class _Builder:
    """Accumulates token runs; a media run's placeholders form one run of their own."""

    def __init__(self) -> None:
        self.runs: list[_Run] = []
        self.ids: list[int] = []
        self.modality: list[int] = []
        self.items: list[MMItem] = []

    def text(self, ids: list[int]) -> None:
        if not ids:
            return
        if self.runs and self.runs[-1].item is None:
            self.runs[-1].ids.extend(ids)
        else:
            self.runs.append(_Run(list(ids)))
        self.ids.extend(ids)
        self.modality.extend([0] * len(ids))

    def media(self, start: list[int], item: MMItem, patch_id: int, end: list[int]) -> None:
        self.text(start)
        item.offset = len(self.ids)
        self.runs.append(_Run([patch_id] * item.length, item))
        self.ids.extend([patch_id] * item.length)
        self.modality.extend([MODALITY[item.kind]] * item.length)
        self.items.append(item)
        self.text(end)
