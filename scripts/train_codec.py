"""Fit the lightweight codec's codebook: k-means (4096 centroids) over log-mel frames of speech
synthesised with espeak-ng (English, Mandarin and Cantonese voices).

    .venv/bin/python scripts/train_codec.py --minutes 15 --iters 15

Writes ``audio/codec/assets/mel_vq_codebook.npy`` (float16, [4096, 80], about 650 KB).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from audio.codec.base import CODEBOOK_SIZE
from audio.codec.espeak import corpus
from audio.codec.mel_vq import ASSET, log_mel


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """Lloyd's k-means on rows of ``x`` [P, M]; empty clusters are re-seeded from random points."""
    g = torch.Generator().manual_seed(seed)
    cent = x[torch.randperm(len(x), generator=g)[:k]].clone()  # [K, M]
    for it in range(iters):
        assign = torch.cat([
            ((cent**2).sum(1)[None] - 2 * chunk @ cent.T).argmin(1) for chunk in torch.split(x, 8192)
        ])  # [P]
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        empty = counts == 0
        cent = torch.where(empty[:, None], cent, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            cent[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=g)]
        err = ((x - cent[assign]) ** 2).sum(1).mean().item()
        print(f"iter {it + 1}/{iters}: mse {err:.4f}, empty {int(empty.sum())}", flush=True)
    return cent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="minutes of synthetic speech (default 15)")
    p.add_argument("--iters", type=int, default=15, help="k-means iterations (default 15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ASSET)
    args = p.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    t0 = time.time()
    waves = corpus(args.minutes, seed=args.seed)
    frames = np.concatenate([log_mel(w) for w in waves])  # [P, M]
    print(f"{len(waves)} utterances, {len(frames)} frames ({len(frames) / 3000:.1f} min) in {time.time() - t0:.0f} s")
    cent = kmeans(torch.from_numpy(frames), CODEBOOK_SIZE, args.iters, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, cent.numpy().astype(np.float16))
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
