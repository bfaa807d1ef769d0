"""Figures of Ming's detokenizer for ``omni-agent bench speech`` (the ``ming_*`` keys).

Without a checkpoint the modules have Ming 1.5's REAL sizes (``audio/codec/assets/ming_detok_stream.yaml``:
1,121 flow + 328 HiFT tensors) with seeded random weights, saved in the release layout to a temporary
folder and loaded back through the strict loader; with ``--opt ming=PATH`` (a checkpoint root or its
``talker/``) the released files are loaded instead. ``--quick`` uses the tiny sizes. A 2 s clip (100
random tokens, a random 50-token voice prompt) is streamed as the talker would feed it (token by token
in groups of 10); ``ming_detok_rtf`` = wall time / audio time, ``ming_first_chunk_ms`` = time from the
token that completes the first chunk (50 + 3 lookahead) to its PCM.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

CLIP_TOKENS = 100  # 2 s of speech at 50 Hz
PROMPT_TOKENS = 50


def time_stream(det: Any, voice: Any, tokens: Any, group: int = 10) -> tuple[float, float | None, int]:
    """Stream ``tokens`` ``group`` at a time through a fresh session -> (wall seconds, ms from the push
    that completes the first chunk to its PCM, samples out)."""
    import torch

    def sync() -> None:
        if det.device.type == "cuda":
            torch.cuda.synchronize()

    st = det.stream(voice)
    first_ms, n, t0 = None, 0, time.perf_counter()
    for i in range(0, len(tokens), group):
        t_push = time.perf_counter()
        pcm = st.push(tokens[i:i + group])
        sync()
        if len(pcm) and first_ms is None:
            first_ms = (time.perf_counter() - t_push) * 1000
        n += len(pcm)
    n += len(st.finish())
    sync()
    return time.perf_counter() - t0, first_ms, n


def ming_figures(quick: bool, path: str | None = None, device: str = "cpu", dtype: Any = None) -> dict[str, Any]:
    import numpy as np
    import torch

    from audio.codec.ming import MingDetokenizer, write_random_release

    dtype = dtype or torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        size = "checkpoint" if path else ("tiny" if quick else "real")
        src = Path(path) if path else write_random_release(size, Path(tmp))
        t0 = time.perf_counter()
        det = MingDetokenizer.from_pretrained(src, device=device, dtype=dtype)
        load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    voice = det.make_voice(rng.integers(0, 4096, PROMPT_TOKENS),
                           rng.standard_normal((PROMPT_TOKENS * det.cfg.flow.token_mel_ratio, 80)),
                           rng.standard_normal(192))
    tokens = rng.integers(0, 4096, CLIP_TOKENS)
    det.synthesize(tokens[:5], voice)  # warm-up: first calls allocate and pick kernels

    wall, first_ms, n = time_stream(det, voice, tokens)
    return {
        "ming_detok_rtf": wall / (n / det.sample_rate),
        "ming_first_chunk_ms": first_ms,
        "ming_tensors_loaded": det.tensors_loaded,
        "ming_tensors_expected": det.tensors_expected,
        "ming_detok_size": size,
        "ming_sample_rate": det.sample_rate,
        "ming_load_s": load_s,
    }
