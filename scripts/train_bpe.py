"""Train the BPE over codec tokens: synthesise speech with espeak-ng (training voices and
sentences), encode it with the lightweight codec, and fit an HF ``tokenizers`` BPE on the codes.

    .venv/bin/python scripts/train_bpe.py --minutes 180 --vocab-size 32768

Writes ``audio/codec/assets/s3_bpe/{tokenizer.json,char_mapping.txt}`` (Ming's ``s3_bpe`` layout)
and prints the token rate on the training codes. The held-out rate is ``omni-agent bench speech``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from audio.bpe import ASSET_DIR, MAX_VOCAB, CodeBPE
from audio.codec.espeak import corpus
from audio.codec.mel_vq import MelVQCodec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=180.0, help="minutes of synthetic speech (default 180)")
    p.add_argument("--vocab-size", type=int, default=MAX_VOCAB, help="BPE vocabulary (default 32768)")
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--seed", type=int, default=1, help="corpus seed (the codec uses 0, the bench 7)")
    p.add_argument("--out", type=Path, default=ASSET_DIR)
    args = p.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    t0 = time.time()
    codec = MelVQCodec()
    streams = [codec.encode(w) for w in corpus(args.minutes, seed=args.seed)]
    n_codes = sum(len(s) for s in streams)
    print(f"{len(streams)} utterances, {n_codes} codes ({n_codes / 3000:.1f} min) in {time.time() - t0:.0f} s")
    bpe = CodeBPE.train(streams, args.vocab_size, min_frequency=args.min_frequency)
    n_tok = sum(len(bpe.encode(s)) for s in streams)
    assert all(np.array_equal(bpe.decode(bpe.encode(s)), s) for s in streams)
    print(f"vocab {bpe.vocab_size}: training-set reduction {1 - n_tok / n_codes:.3f} ({50 * n_tok / n_codes:.1f} Hz)")
    bpe.save(args.out)
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
