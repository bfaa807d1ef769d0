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
from omni_agent.model.config import TINY_TOKENIZER, ThinkerConfig
from omni_agent.model.errors import PlaceholderMismatchError
from vision.preprocess import (
    MAX_PIXELS,
    MIN_PIXELS,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    ImageError,
    preprocess_frames,
    preprocess_image,
    preprocess_video,
)

__all__ = ["TINY_TOKENIZER", "MMItem", "OmniProcessor", "ProcessedPrompt", "PromptError", "asr_messages"]

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
                 max_pixels: int = MAX_PIXELS, video_min_pixels: int = VIDEO_MIN_PIXELS,
                 video_max_pixels: int = VIDEO_MAX_PIXELS, time_aligned_video: bool = False) -> None:
        """Args:
            tokenizer: a HF ``tokenizers.Tokenizer`` containing Ming's special tokens.
            config: thinker config (rope type, merge size, tokens per second); the real preset when None.
            min_pixels: the image processor's smallest image area (after Ming's fetch step).
            max_pixels: the largest image area.
            video_min_pixels: smallest frame area for raw frame lists (Ming's video limits); a
                ``VideoClip``'s frames are used as the loader sized them.
            video_max_pixels: largest frame area for raw frame lists.
            time_aligned_video: scale video t ids by seconds per temporal patch x tokens_per_second
                (Ming's ``second_per_grid_ts`` variant); off in Ming's own inference code.
        """
        self.tokenizer = tokenizer
        self.config = config or ThinkerConfig.preset("ming-lite-omni-1.5")
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.video_min_pixels, self.video_max_pixels = video_min_pixels, video_max_pixels
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
            kwargs.setdefault("video_min_pixels", int(p.get("min_pixels_video", VIDEO_MIN_PIXELS)))
            kwargs.setdefault("video_max_pixels", int(p.get("max_pixels_video", VIDEO_MAX_PIXELS)))
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
            if hasattr(clip, "frames"):  # a VideoClip: the loader already sized its frames (and budget)
                pv, grid = preprocess_frames(frames)
            else:  # decoded frames at their source size: Ming's video sizing
                pv, grid = preprocess_video(frames, min_pixels=self.video_min_pixels,
                                            max_pixels=self.video_max_pixels)
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
        """Assign MRoPE positions (Ming's ``get_rope_index`` for ``3D``, ``get_t_scale_rope_index`` for
        ``video_rope``)."""
        if self.config.llm.rope_type == "video_rope":
            position_ids, next_pos = self._video_rope_positions(b)
        else:
            position_ids, next_pos = self._mrope_positions(b)
        return ProcessedPrompt(input_ids=torch.tensor(b.ids, dtype=torch.long), position_ids=position_ids.long(),
                               modality_ids=torch.tensor(b.modality, dtype=torch.long),
                               rope_delta=next_pos - len(b.ids), mm_items=b.items)

    def _grid_positions(self, item: MMItem, t_scale: float | None) -> torch.Tensor:
        """``[3, t*h*w/4]`` (t, h, w) indices of an item's merged patch grid; t multiplied by ``t_scale``."""
        t, h, w = (int(v) for v in item.grid_thw.reshape(-1))
        gh, gw = h // self.merge, w // self.merge
        t_idx = torch.arange(t).view(-1, 1, 1).expand(t, gh, gw).reshape(-1)
        if t_scale is not None:
            t_idx = (t_idx * t_scale).long()
        h_idx = torch.arange(gh).view(1, -1, 1).expand(t, gh, gw).reshape(-1)
        w_idx = torch.arange(gw).view(1, 1, -1).expand(t, gh, gw).reshape(-1)
        return torch.stack([t_idx, h_idx, w_idx])

    def _mrope_positions(self, b: _Builder) -> tuple[torch.Tensor, int]:
        """Ming's ``get_rope_index``: text (and audio) sequential, each grid offset by the position after
        the text before it.

        Ming walks the ids looking for the next ``<imagePatch>``, and images and videos share that token:
        at a tie it takes the next *video's* grid while any video is left. So in a prompt where an image
        comes before a video, Ming gives the first run the video's grid (and the later run the image's),
        and the runs' boundaries move with the grid sizes. This reproduces that walk exactly (it is what
        Ming's ``generate()`` feeds the model); prompts with only images or only videos are unaffected.
        """
        visual = [it for it in b.items if it.kind in ("image", "video")]
        order = [it for it in visual if it.kind == "video"] + [it for it in visual if it.kind == "image"]
        patch = self.ids[IMAGE_PATCH]
        ids = b.ids
        chunks: list[torch.Tensor] = []
        st, next_pos = 0, 0
        for item in order:
            ed = ids.index(patch, st)
            chunks.append(torch.arange(next_pos, next_pos + ed - st).expand(3, -1))
            spg = item.second_per_grid if (item.kind == "video" and self.time_aligned_video) else None
            grid = self._grid_positions(item, spg * self.config.vision.tokens_per_second if spg else None)
            grid = grid + next_pos + (ed - st)
            chunks.append(grid)
            next_pos = int(grid.max()) + 1
            st = ed + grid.shape[1]
        if st < len(ids):
            chunks.append(torch.arange(next_pos, next_pos + len(ids) - st).expand(3, -1))
            next_pos += len(ids) - st
        if not chunks:
            return torch.zeros(3, 0, dtype=torch.long), 0
        return torch.cat(chunks, dim=1), next_pos

    def _video_rope_positions(self, b: _Builder) -> tuple[torch.Tensor, int]:
        """Ming's ``get_t_scale_rope_index``, run by run: t stepped by 2 (x seconds per grid when
        time-aligned), h/w centred on the frame and riding on t ("body-diagonal symmetry")."""
        rows: list[torch.Tensor] = []
        next_pos = 0
        for run in b.runs:
            item = run.item
            if item is None or item.kind == "audio":  # text and audio: sequential on all rows
                rows.append(torch.arange(next_pos, next_pos + len(run.ids)).expand(3, -1))
                next_pos += len(run.ids)
                continue
            _, h, w = (int(v) for v in item.grid_thw.reshape(-1))
            t_idx, h_idx, w_idx = self._grid_positions(item, None)
            spg = item.second_per_grid if (item.kind == "video" and self.time_aligned_video) else None
            t_pos = (t_idx * (spg if spg is not None else 1.0) * 2.0).long() + next_pos
            gh, gw = h // self.merge, w // self.merge
            rows.append(torch.stack([t_pos, h_idx - (gh - 1) // 2 + t_pos, w_idx - (gw - 1) // 2 + t_pos]))
            next_pos = int(rows[-1][0].max()) + 1
        return (torch.cat(rows, dim=1) if rows else torch.zeros(3, 0, dtype=torch.long)), next_pos

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
