"""Speech-out speed on one CUDA GPU: Ming's detokenizer (flow matching + HiFT) at REAL sizes, bf16.

Builds the detokenizer with Ming 1.5's real sizes (``audio/codec/assets/ming_detok_stream.yaml``,
1,121 flow + 328 HiFT tensors) and seeded random weights, or loads ``--model PATH`` (a checkpoint
root or its ``talker/``). The flow runs in bf16 (``--dtype``), HiFT in fp32 (torch's STFT needs it).
A voice prompt of luna_v2's size (150 tokens / 150 mel frames, random) conditions every render.

Figures: offline RTF of a ``--seconds`` clip (one render, Ming's ``stream=False`` path), streaming
RTF of the same clip pushed 10 tokens at a time (Ming's caches: a render every 50 tokens over all
tokens so far), time to the first chunk, and the largest difference bf16 vs fp32 on the offline mel.
(The talker's tokens/s is added to this script by the talker work.)

    python scripts/gpu_speech.py [--seconds 10] [--dtype bf16] [--model PATH]
    python scripts/gpu_speech.py --cpu-smoke      # tiny sizes on CPU: checks the script only

Exits with status 2 and a message when there is no CUDA device. Writes one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--model", default=None, help="checkpoint root or talker/ folder with Ming's detokenizer files")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (no GPU needed)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from audio.codec.ming import MingDetokenizer
    from omni_agent.bench.ming_detok import time_stream

    if args.cpu_smoke:
        device, preset, args.seconds = "cpu", "tiny", min(args.seconds, 2.0)
    elif not torch.cuda.is_available():
        print("gpu_speech.py: no CUDA device (use --cpu-smoke to check the script on CPU)", file=sys.stderr)
        return 2
    else:
        device, preset = "cuda", "real"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    load = (lambda dt: MingDetokenizer.from_pretrained(args.model, device=device, dtype=dt)) if args.model else (
        lambda dt: MingDetokenizer.build(preset, device=device, dtype=dt))
    det = load(dtype)
    sync()
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    ratio = det.cfg.flow.token_mel_ratio
    voice = det.make_voice(rng.integers(0, 4096, 150), rng.standard_normal((150 * ratio, 80)), rng.standard_normal(192))
    tokens = rng.integers(0, 4096, int(args.seconds * 50))
    det.synthesize(tokens[:60], voice)  # warm-up
    sync()

    t0 = time.perf_counter()
    wave = det.synthesize(tokens, voice)
    sync()
    offline_s = time.perf_counter() - t0
    audio_s = len(wave) / det.sample_rate

    stream_s, first_ms, n = time_stream(det, voice, tokens)

    mel_diff = None
    if dtype != torch.float32 and not args.model:
        ref = MingDetokenizer.build(preset, device=device, dtype=torch.float32)
        tok = torch.tensor(tokens, device=device)[None]
        a = det.flow.inference(tok, voice.tokens.to(device), voice.mel.to(device, dtype),
                               voice.embedding.to(device, dtype), streaming=False, finalize=True)
        b = ref.flow.inference(tok, voice.tokens.to(device), voice.mel.to(device), voice.embedding.to(device),
                               streaming=False, finalize=True)
        mel_diff = float((a - b).abs().max())
        del ref

    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "sizes": "checkpoint" if args.model else preset, "dtype": args.dtype,
        "tensors_loaded": det.tensors_loaded, "tensors_expected": det.tensors_expected,
        "audio_seconds": audio_s, "load_s": load_s,
        "detok_offline_rtf": offline_s / audio_s, "detok_stream_rtf": stream_s / (n / det.sample_rate),
        "detok_first_chunk_ms": first_ms, "mel_maxdiff_vs_fp32": mel_diff,
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
