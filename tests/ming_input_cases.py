"""The inputs behind ``tests/fixtures/ming_inputs``: shared by the fixture script and the tests.

Images and video frames are made from integer arithmetic only (no random generator), so the side
environment that runs Ming's code and the project's venv build bit-identical inputs.
"""

from __future__ import annotations

import numpy as np

# (height, width) of still images: tiny, small (two-step resize), extreme aspect ratios, huge.
IMAGE_SIZES = [(28, 28), (56, 300), (100, 150), (300, 400), (1000, 20), (20, 1000), (4000, 3000), (60, 70)]

# name -> (height, width, frame count) of raw video frames, before any resizing.
VIDEO_CASES = {
    "v112x112": (112, 112, 4),
    "v240x320": (240, 320, 6),
    "v1080x1920": (1080, 1920, 4),
    "portrait1280x720": (1280, 720, 4),
    "v480x640_48frames": (480, 640, 48),  # many frames: Ming's per-frame cap falls with the frame count
}

# Prompts for placeholder counts and position ids: (text before, media list, text after).
PROMPTS = {
    "image_small": [("image", (100, 150)), ("text", "What is in this picture?")],
    "video_320x240": [("video", "v240x320"), ("text", "Describe the video.")],
    "image_and_video": [("text", "Compare"), ("image", (56, 300)), ("text", " with"), ("video", "v112x112"),
                        ("text", " please.")],
}

SAMPLED_ROWS = 24  # pixel-value rows stored per item (all rows are checked through two checksums)


def synth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic ``[h, w, 3]`` uint8 image with edges, gradients and texture."""
    i = np.arange(h, dtype=np.int64)[:, None, None]
    j = np.arange(w, dtype=np.int64)[None, :, None]
    c = np.arange(3, dtype=np.int64)[None, None, :]
    v = (i * (3 + seed) * 255) // max(h, 1) + (j * (5 + c) * 255) // max(w, 1) + ((i * 7 + j * 13) % (17 + c)) * 4
    v = v + ((i // 9 + j // 11 + seed) % 2) * 60 + seed * 23
    return (v % 256).astype(np.uint8)


def synth_frames(h: int, w: int, n: int) -> np.ndarray:
    """``[n, h, w, 3]`` uint8 frames that change from one to the next."""
    return np.stack([synth_image(h, w, seed=k) for k in range(n)])


def checksum_weights(features: int) -> np.ndarray:
    """Fixed float64 weights for the per-patch weighted checksum."""
    return np.cos(np.arange(features, dtype=np.float64) * 0.37)


def sampled_rows(num_patches: int) -> np.ndarray:
    """Indices of the stored pixel-value rows of an item with ``num_patches`` patches."""
    return np.unique(np.linspace(0, num_patches - 1, SAMPLED_ROWS).astype(np.int64))


def checksums(pixel_values: np.ndarray) -> np.ndarray:
    """``[P, 2]`` float64: each patch's sum and weighted sum."""
    x = pixel_values.astype(np.float64)
    return np.stack([x.sum(1), x @ checksum_weights(x.shape[1])], axis=1)
