"""Image and video-frame preprocessing for the Qwen2.5-VL-style vision encoder.

Images are resized so both sides are multiples of 28 (patch 14 x merge 2) with the pixel count kept
within [min_pixels, max_pixels] (Ming: 78400..802816, i.e. 100..1024 tokens), normalised with the CLIP
mean/std and cut into flattened patches of 2 frames x 14 x 14 pixels x 3 channels. A still image is
repeated to fill the temporal patch. Output layout matches Qwen2.5-VL's processor: patches in
merge-unit order (each 2x2 group of patches is contiguous), so the encoder can merge by reshaping.

Shape legend: P patches, C = 3 * 2 * 14 * 14 = 1176 features per patch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

PATCH = 14
MERGE = 2
TEMPORAL = 2
FACTOR = PATCH * MERGE  # 28: each side must be a multiple of this
MIN_PIXELS = 78400  # 100 tokens of 28x28
MAX_PIXELS = 802816  # 1024 tokens of 28x28
MAX_RATIO = 200  # Qwen2.5-VL refuses more extreme aspect ratios
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageError(ValueError):
    """An image or frame list that cannot be encoded, with a message that says why."""


def smart_resize(h: int, w: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Closest (h, w) with both sides multiples of ``factor`` and h*w within [min_pixels, max_pixels].

    Raises:
        ImageError: an empty image or an aspect ratio above 200.
    """
    if h <= 0 or w <= 0:
        raise ImageError(f"image is empty ({w}x{h} pixels)")
    if max(h, w) / min(h, w) > MAX_RATIO:
        raise ImageError(f"image aspect ratio {max(h, w) / min(h, w):.0f} is above {MAX_RATIO} ({w}x{h})")
    h_bar = max(factor, round(h / factor) * factor)
    w_bar = max(factor, round(w / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        h_bar = max(factor, math.floor(h / beta / factor) * factor)
        w_bar = max(factor, math.floor(w / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        h_bar = math.ceil(h * beta / factor) * factor
        w_bar = math.ceil(w * beta / factor) * factor
    return h_bar, w_bar


def _to_rgb_array(img: object) -> np.ndarray:
    """PIL image or HxWx3 uint8 array -> HxWx3 uint8 array."""
    if hasattr(img, "convert"):  # PIL
        w, h = img.size  # type: ignore[attr-defined]
        if w == 0 or h == 0:
            raise ImageError(f"image is empty ({w}x{h} pixels)")
        arr = np.asarray(img.convert("RGB"))  # type: ignore[attr-defined]
    else:
        arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"expected an HxWx3 RGB image, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"image is empty ({arr.shape[1]}x{arr.shape[0]} pixels)")
    return arr


def _resize(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if arr.shape[:2] == (h, w):
        return arr
    return np.asarray(Image.fromarray(arr.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC))


def _patchify(frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """[F, H, W, 3] uint8 (F a multiple of 2) -> (pixel_values [P, C], grid_thw [1, 3])."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)  # [F, H, W, 3]
    mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    x = ((x - mean) / std).permute(0, 3, 1, 2)  # [F, 3, H, W]
    n_frames, _, H, W = x.shape
    gt, gh, gw = n_frames // TEMPORAL, H // PATCH, W // PATCH
    x = x.reshape(gt, TEMPORAL, 3, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    # -> (t, h/2, w/2, 2, 2) patches, each flattened as (channel, temporal, py, px) like Conv3d weights.
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = x.reshape(gt * gh * gw, 3 * TEMPORAL * PATCH * PATCH)
    return pixel_values, torch.tensor([[gt, gh, gw]], dtype=torch.long)


def preprocess_image(img: object, *, min_pixels: int = MIN_PIXELS,
                     max_pixels: int = MAX_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """One image (PIL or HxWx3 uint8) -> (pixel_values [P, 1176], grid_thw [1, 3] with t = 1).

    Raises:
        ImageError: empty image, wrong shape or extreme aspect ratio.
    """
    arr = _to_rgb_array(img)
    h, w = smart_resize(arr.shape[0], arr.shape[1], min_pixels=min_pixels, max_pixels=max_pixels)
    arr = _resize(arr, h, w)
    return _patchify(np.stack([arr] * TEMPORAL))


def preprocess_frames(frames: Sequence[np.ndarray], *, min_pixels: int = MIN_PIXELS,
                      max_pixels: int = MAX_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Video frames (HxWx3 uint8, same size) -> (pixel_values, grid_thw [1, 3]) with t = ceil(n / 2).

    An odd frame count repeats the last frame. ``max_pixels`` applies per frame (callers lower it to
    keep long videos within a token budget).

    Raises:
        ImageError: no frames, empty frames or frames of different sizes.
    """
    if len(frames) == 0:
        raise ImageError("video has no frames")
    arrs = [_to_rgb_array(f) for f in frames]
    if len({a.shape for a in arrs}) != 1:
        raise ImageError(f"video frames differ in size: {sorted({a.shape for a in arrs})}")
    h, w = smart_resize(arrs[0].shape[0], arrs[0].shape[1], min_pixels=min_pixels, max_pixels=max_pixels)
    arrs = [_resize(a, h, w) for a in arrs]
    if len(arrs) % TEMPORAL:
        arrs.append(arrs[-1])
    return _patchify(np.stack(arrs))


def token_count(grid_thw: torch.Tensor) -> int:
    """LLM tokens for one item: t * h * w / 4 (after the 2x2 merge)."""
    t, h, w = (int(v) for v in grid_thw.reshape(-1)[:3])
    return t * h * w // (MERGE * MERGE)
