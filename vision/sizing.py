"""Ming-Lite-Omni 1.5's media sizes: where images and video frames are resized to (no torch needed).

Ming sizes an image twice: ``fetch_image`` (3,136..802,816 pixels) and then its image processor
(78,400..802,816, the limits in ``preprocessor_config.json``); video frames twice as well:
``fetch_video`` (100,352 pixels up to 602,112, or less for many frames: 9,216 tokens shared by the frame
pairs) and the image processor's video limits (100,352..602,112). Both sides always end as multiples of
28 (patch 14 x merge 2). ``vision.preprocess`` does the resizing; ``vision.video`` plans frame sizes
with these rules before decoding.
"""

from __future__ import annotations

import math

PATCH = 14
MERGE = 2
TEMPORAL = 2
FACTOR = PATCH * MERGE  # 28: each side must be a multiple of this
FETCH_MIN_PIXELS = 4 * 28 * 28  # Ming's fetch_image floor (3,136), before the image processor's
MIN_PIXELS = 78400  # the image processor's floor: 100 tokens of 28x28
MAX_PIXELS = 802816  # 1024 tokens of 28x28 (fetch step and image processor alike)
VIDEO_MIN_PIXELS = 128 * 28 * 28  # 100,352 per frame (fetch_video and the processor's video floor)
VIDEO_MAX_PIXELS = 768 * 28 * 28  # 602,112 per frame
VIDEO_TOTAL_PIXELS = 9216 * 28 * 28  # fetch_video's budget over all frames (per frame pair)
MAX_RATIO = 200  # Qwen2.5-VL refuses more extreme aspect ratios


class ImageError(ValueError):
    """An image or frame list that cannot be encoded, with a message that says why."""


def smart_resize(h: int, w: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Closest (h, w) with both sides multiples of ``factor`` and h*w within [min_pixels, max_pixels].

    Ming's rule (``bailingmm_utils.smart_resize``); sides never fall below ``factor`` (which only
    matters for the tight limits a video token budget may ask for).

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


def image_sizes(h: int, w: int, *, min_pixels: int = MIN_PIXELS,
                max_pixels: int = MAX_PIXELS) -> tuple[tuple[int, int], tuple[int, int]]:
    """Ming's two image sizes: after ``fetch_image`` and after the image processor (its limits given)."""
    fetched = smart_resize(h, w, min_pixels=FETCH_MIN_PIXELS, max_pixels=MAX_PIXELS)
    return fetched, smart_resize(*fetched, min_pixels=min_pixels, max_pixels=max_pixels)


def video_fetch_max_pixels(num_frames: int, *, min_pixels: int = VIDEO_MIN_PIXELS,
                           max_pixels: int = VIDEO_MAX_PIXELS, total_pixels: int = VIDEO_TOTAL_PIXELS) -> float:
    """``fetch_video``'s per-frame cap: ``total_pixels`` shared by frame pairs, within [1.05 min, max]."""
    return max(min(max_pixels, total_pixels / max(1, num_frames) * TEMPORAL), int(min_pixels * 1.05))


def video_sizes(h: int, w: int, num_frames: int, *, min_pixels: int = VIDEO_MIN_PIXELS,
                max_pixels: int = VIDEO_MAX_PIXELS,
                total_pixels: int = VIDEO_TOTAL_PIXELS) -> tuple[tuple[int, int], tuple[int, int]]:
    """Ming's two frame sizes for ``num_frames`` frames of h x w: after ``fetch_video``, after the processor."""
    cap = video_fetch_max_pixels(num_frames, min_pixels=min_pixels, max_pixels=max_pixels,
                                 total_pixels=total_pixels)
    fetched = smart_resize(h, w, min_pixels=min_pixels, max_pixels=cap)  # type: ignore[arg-type]
    return fetched, smart_resize(*fetched, min_pixels=min_pixels, max_pixels=max_pixels)
