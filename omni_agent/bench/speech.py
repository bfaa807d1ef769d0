"""``omni-agent bench speech``: codec token rate, BPE compression on held-out speech, detokenizer
speed and time to first audio; ``ming_*`` keys: Ming's flow + HiFT detokenizer (``bench/ming_detok.py``,
``--opt ming=CHECKPOINT`` to load released files).

Held-out speech is synthesised at bench time with espeak-ng from the held-out word lists and
voices (``audio.codec.espeak.HELDOUT_VOICES``), which neither the codebook nor the BPE saw, and is
cached under ``$XDG_CACHE_HOME/omni-agent/speech-bench``. Options: ``--opt minutes=5``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from omni_agent.bench import BenchContext, benchmark

HELDOUT_SEED = 7  # the codec trains on seed 0, the BPE on seed 1
CORPUS_VERSION = 2  # bump when audio/codec/espeak.py word lists or voices change (invalidates the cache)


def _cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "omni-agent" / "speech-bench"


def heldout_speech(minutes: float) -> list:
    """Held-out utterances at 16 kHz (synthesised once, then read from the cache)."""
    import numpy as np

    from audio.codec.espeak import corpus

    path = _cache_dir() / f"heldout_v{CORPUS_VERSION}_{minutes:g}min_seed{HELDOUT_SEED}.npz"
    if path.exists():
        with np.load(path) as z:
            return [z[k] for k in sorted(z.files, key=lambda k: int(k[1:]))]
    waves = corpus(minutes, seed=HELDOUT_SEED, heldout=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"u{i}": w for i, w in enumerate(waves)})
    tmp.replace(path)
    return waves


def _first_chunk_ms(runs: int) -> float:
    import asyncio
    import statistics

    from audio.tts import StreamingTTS

    tts = StreamingTTS.build()
    text = "Hello, this is a streaming speech test with a few words in it. 然后是一句中文。"

    async def once() -> float:
        async def deltas():
            for word in text.split(" "):
                yield word + " "

        t0 = time.perf_counter()
        async for _chunk in tts.stream(deltas()):
            return (time.perf_counter() - t0) * 1000
        raise RuntimeError("no audio")

    asyncio.run(once())  # warm-up: first torch calls allocate and pick kernels
    return statistics.median(asyncio.run(once()) for _ in range(runs))


@benchmark("speech", "codec token rate, BPE compression on held-out speech, detokenizer RTF, first audio")
def speech(ctx: BenchContext) -> dict[str, Any]:
    import numpy as np

    from audio.bpe import CodeBPE
    from audio.codec import load_codec

    minutes = float(ctx.options.get("minutes", 0.3 if ctx.quick else 5.0))
    waves = heldout_speech(minutes)
    seconds = sum(len(w) for w in waves) / 16000
    codec = load_codec("mel-vq")
    bpe = CodeBPE.default()
    streams = [codec.encode(w) for w in waves]
    n_codes = sum(len(s) for s in streams)
    encoded = [bpe.encode(s) for s in streams]
    n_tokens = sum(len(e) for e in encoded)
    rng = np.random.default_rng(0)
    randoms = [rng.integers(0, codec.codebook_size, 2000) for _ in range(5)]
    exact = all(np.array_equal(bpe.decode(e), s) for e, s in zip(encoded, streams, strict=True)) and all(
        np.array_equal(bpe.decode(bpe.encode(r)), r) for r in randoms)

    # detokenizer speed: stream the held-out codes through the decoder as a talker would
    detok_codes = np.concatenate(streams)[: 50 * (10 if ctx.quick else 60)]
    t0, c0 = time.perf_counter(), time.process_time()
    with codec.streaming() as dec:
        n = sum(len(dec.push(detok_codes[i:i + 25])) for i in range(0, len(detok_codes), 25))
        n += len(dec.flush())
    detok_rtf = (time.perf_counter() - t0) / (n / codec.sample_rate)
    detok_cpu_rtf = (time.process_time() - c0) / (n / codec.sample_rate)  # CPU seconds: robust to a busy machine

    reduction = 1 - n_tokens / n_codes
    from omni_agent.bench.ming_detok import ming_figures  # Ming's flow + HiFT (real sizes unless --quick)

    return {
        **ming_figures(ctx.quick, ctx.options.get("ming")),
        "codes_hz": n_codes / seconds,
        "bpe_tokens_hz": n_tokens / seconds,
        "bpe_rate_reduction": reduction,
        "roundtrip_exact": bool(exact),
        "detok_rtf": detok_rtf,
        "detok_cpu_rtf": detok_cpu_rtf,
        "first_chunk_ms": _first_chunk_ms(1 if ctx.quick else 5),
        "heldout_minutes": seconds / 60,
        "bpe_vocab": bpe.vocab_size,
        "bpe_target_met": reduction >= 0.35,
        "detok_target_met": detok_rtf < 0.3,
    }
