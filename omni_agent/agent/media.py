"""Input media (user images, audio and videos) referenced from messages, not held in them.

Checkpoints hold message parts like ``{"type": "audio", "artifact_id": "art_..."}`` instead of the
samples, so a session's history stays small and survives restarts with its media. Videos are
``{"type": "video", "video_id": <content hash>}``: the decoded clip stays in this process (see
:func:`remember_clip`), its audio track is an audio artifact like the user's voice.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any

import numpy as np

AUDIO_RATE = 16000  # the thinker's audio encoder input rate


def store_audio(store: Any, wave: np.ndarray, *, sample_rate: int = AUDIO_RATE) -> str:
    """Write mono float audio as a 16-bit WAV artifact; returns its id."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return store.put(buf.getvalue(), "audio/wav", kind="audio", meta={"sample_rate": sample_rate}).id


def load_audio(store: Any, artifact_id: str) -> np.ndarray:
    """A stored WAV artifact as float32 mono at its own rate (16 kHz for input audio)."""
    import soundfile as sf

    got = store.get(artifact_id)
    if got is None:
        raise KeyError(f"unknown artifact {artifact_id!r}")
    wave, _sr = sf.read(io.BytesIO(got[0]), dtype="float32")
    return wave if wave.ndim == 1 else wave.mean(axis=1)


# --------------------------------------------------------------------------------------------------
# Videos: kept in memory by content hash (a clip is frames, too big for the checkpoint), referenced by it

MAX_CLIPS = 16  # decoded clips held for the prompts of live sessions (the decoded-clip cache's size)
_CLIPS: OrderedDict[str, Any] = OrderedDict()


def remember_clip(clip: Any) -> str:
    """Keep a ``VideoClip`` for later prompts; returns its reference (the clip's content hash)."""
    key = str(clip.content_hash)
    _CLIPS[key] = clip
    _CLIPS.move_to_end(key)
    while len(_CLIPS) > MAX_CLIPS:
        _CLIPS.popitem(last=False)
    return key


def recall_clip(video_id: str) -> Any | None:
    """The clip behind a ``video_id`` (None once evicted or after a restart)."""
    clip = _CLIPS.get(video_id)
    if clip is not None:
        _CLIPS.move_to_end(video_id)
    return clip


def user_parts(store: Any, content: Any, text: str) -> list[dict[str, Any]]:
    """A user message's processor parts -> the parts a checkpoint keeps (media by reference).

    Audio and images go to the artifact store (an image also gets an ``[image id: ...]`` note so tools
    can name it), a video is kept by :func:`remember_clip`; the order is kept, so a video asked about
    stays the prompt's shared prefix. ``text`` (the item's text or transcript) is appended unless the
    user spoke (then the audio is the question and the transcript only a note).

    Returns:
        The parts, or an empty list when the message has no media (it is then plain ``text``).
    """
    parts: list[dict[str, Any]] = []
    voice = False
    for p in content if isinstance(content, list) else []:
        kind = p.get("type")
        if kind == "audio" and p.get("audio") is not None:
            ref: dict[str, Any] = {"type": "audio", "artifact_id": store_audio(store, p["audio"])}
            if p.get("source") == "video":
                ref["source"] = "video"  # the video's own track, not the user's voice
            else:
                voice = True
            parts.append(ref)
        elif kind == "image" and p.get("image") is not None:
            art = store.put_image(p["image"], kind="input")
            parts.append({"type": "image", "artifact_id": art.id})
            parts.append({"type": "text", "text": f"[image id: {art.id}]"})
        elif kind == "video" and p.get("video") is not None:
            parts.append({"type": "video", "video_id": remember_clip(p["video"])})
    if parts and text and not voice:
        parts.append({"type": "text", "text": text})
    return parts


def video_prompt_part(part: dict[str, Any]) -> dict[str, Any] | None:
    """A checkpoint ``{"type": "video", "video_id"}`` part -> the processor's ``{"type": "video", "video": clip}``.

    None when the clip is gone (evicted, or the server restarted): the turn goes on without it.
    """
    clip = part.get("video") or recall_clip(str(part.get("video_id")))
    return {"type": "video", "video": clip} if clip is not None else None
