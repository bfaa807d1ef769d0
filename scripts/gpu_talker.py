"""Talker tokens/s of the real-size Ming talker on one CUDA GPU (random bf16 weights).

Builds the ``ming-lite-omni-1.5`` talker (Qwen2.5-0.5B shape, vocabulary 184445 = 151677 text +
32768 BPE audio, tied head) directly on the GPU in bf16, with a stand-in tokenizer of the release
size (Ming's special tokens at 151665..151675, ``<audio_eos>`` at 151666), the ``luna`` voice
prompt and the committed s3 BPE. It times what ``Talker.generate`` does for one sentence: the
prefix prefill (voice prompt + text, ~150 positions) and then decode steps with Ming's sampling
(top-20 over the full vocabulary). Random weights rarely draw ``<audio_eos>``, so a run is
``--steps`` long. The detokenizer's RTF is measured by ``scripts/gpu_speech.py``.

    python scripts/gpu_talker.py [--steps 300] [--runs 3]
    python scripts/gpu_talker.py --cpu-smoke    # tiny widths on CPU: checks the script only

Exits with status 2 and a message when there is no GPU (without --cpu-smoke). Writes one JSON line
(keys ``talker_tokens_per_s``, ``talker_prefill_ms``, ``talker_step_ms_p50``, ``device``) at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

SPECIAL_BASE = 151665  # Qwen2.5's 151665 tokens, then the talker's specials


class StandInTokenizer:
    """The release tokenizer's size and special ids; text is encoded as bytes (ids 0..255)."""

    def __init__(self, size: int = 151677):
        from audio.talker import SPECIAL_TOKENS

        order = ["<audio_bos>", "<audio_eos>"] + [t for t in SPECIAL_TOKENS if t not in ("<audio_bos>", "<audio_eos>")]
        self._special = {t: SPECIAL_BASE + i for i, t in enumerate(order)}
        self._size = size

    def __len__(self) -> int:
        return self._size

    def encode(self, text: str) -> list[int]:
        return [self._special[text]] if text in self._special else list(text.encode("utf-8"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="decode steps per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--text", default="今天天气很好，我们去公园散步吧。")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny widths on CPU, to check the script")
    args = ap.parse_args()

    import torch

    from audio.bpe import CodeBPE
    from audio.talker import Talker, TalkerConfig
    from audio.voices import load_voice

    if args.cpu_smoke:
        device, dtype = torch.device("cpu"), torch.float32
        cfg = TalkerConfig.preset("ming-lite-omni-1.5", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=128)
        args.steps, args.runs = min(args.steps, 20), 1
    elif not torch.cuda.is_available():
        print("gpu_talker: error: no CUDA device; this script measures GPU talker speed", file=sys.stderr)
        return 2
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
        cfg = TalkerConfig.preset("ming-lite-omni-1.5")
    torch.manual_seed(0)
    with device:
        talker = Talker(cfg, tokenizer=StandInTokenizer(), bpe=CodeBPE.default()).to(dtype).eval()
    voice = load_voice("luna")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    list(talker.generate(args.text, voice, seed=0, max_steps=8))  # warm-up (kernels, allocator)

    rates, prefill_ms, step_ms = [], [], []
    for run in range(args.runs):
        sync()
        t0 = time.perf_counter()
        stamps = []
        for _tok in talker.generate(args.text, voice, seed=run, max_steps=args.steps):
            sync()
            stamps.append(time.perf_counter())
        if len(stamps) < 2:
            continue
        prefill_ms.append((stamps[0] - t0) * 1e3)  # prefix prefill + the first draw
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        step_ms.extend(g * 1e3 for g in gaps)
        rates.append(len(gaps) / (stamps[-1] - stamps[0]))
    n_params = sum(p.numel() for p in talker.parameters())
    result = {
        "talker_tokens_per_s": round(statistics.median(rates), 1) if rates else None,
        "talker_prefill_ms": round(statistics.median(prefill_ms), 2) if prefill_ms else None,
        "talker_step_ms_p50": round(statistics.median(step_ms), 3) if step_ms else None,
        "talker_params": n_params, "steps": args.steps, "runs": args.runs,
        "prefix_len": len(talker.prefix_ids(args.text, voice).audio_ids),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu-smoke",
        "dtype": str(dtype).replace("torch.", ""),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
