"""Speech codecs: 16 kHz audio <-> 50 Hz codes in ``[0, 4096)``, with streaming decoders.

Backends behind ``SpeechCodec``:

- ``mel-vq`` (``MelVQCodec``): VQ over log-mel frames, Griffin-Lim decoding; no neural weights.
- ``ming`` (``MingDetokenizer``): Ming-Lite-Omni 1.5's detokenizer (upsampling Conformer + causal flow
  matching -> mel, HiFT -> 24 kHz, Ming's streaming caches); ``path=`` loads a checkpoint's ``talker/``
  files strictly, without it seeded random tiny weights.
"""

from __future__ import annotations

from typing import Any

from audio.codec.base import (
    BLOCK_CODES,
    CODE_RATE_HZ,
    CODEBOOK_SIZE,
    LOOKAHEAD_CODES,
    CodecError,
    DecoderState,
    SpeechCodec,
    StreamingDecoder,
)

__all__ = [
    "BLOCK_CODES", "CODEBOOK_SIZE", "CODE_RATE_HZ", "LOOKAHEAD_CODES", "CodecError", "DecoderState",
    "SpeechCodec", "StreamingDecoder", "load_codec",
]


def load_codec(name: str = "mel-vq", **kwargs: Any) -> SpeechCodec:
    """Build a codec backend by name: ``mel-vq`` or ``ming`` (kwargs go to its constructor).

    Raises:
        CodecError: an unknown backend name.
    """
    if name == "mel-vq":
        from audio.codec.mel_vq import MelVQCodec

        return MelVQCodec(**kwargs)
    if name == "ming":
        from audio.codec.ming import MingDetokenizer

        path = kwargs.pop("path", None)
        return MingDetokenizer.from_pretrained(path, **kwargs) if path else MingDetokenizer.build(**kwargs)
    raise CodecError(f"unknown codec backend {name!r} (mel-vq, ming)")
