"""Image and video-frame preprocessing for the Qwen2.5-VL-style vision encoder, exactly as Ming does it.

Ming-Lite-Omni 1.5 sizes media in two steps (the sizes: ``vision.sizing``) and this module repeats both, in the same order, with the
same interpolation and rounding (checked against fixtures made with Ming's own code,
``tests/fixtures/ming_inputs``):

- **Images**: ``fetch_image`` resizes the original so both sides are multiples of 28 (patch 14 x merge 2)
  with 3,136..802,816 pixels (PIL bicubic); the image processor then resizes that result again to
  78,400..802,816 pixels (100..1024 tokens). A small image is therefore resized twice: 100x150 becomes
  112x140, then 252x336 (grid 1x18x24, 108 tokens).
- **Video frames**: ``fetch_video`` resizes the decoded frames to 100,352..``max`` pixels, where ``max`` is
  602,112 (768 tokens) or, for many frames, a share of a 9,216-token total (torch bicubic with
  antialias, rounded to uint8); the image processor's video limits (100,352..602,112) then apply again.

Pixels are rescaled by 1/255 in float64, cast to float32, normalised with the CLIP mean/std and cut into
flattened patches of 2 frames x 14 x 14 pixels x 3 channels, in merge-unit order (each 2x2 group of
patches contiguous) so the encoder can merge by reshaping. A still image is repeated to fill the
temporal patch.

Shape legend: P patches, C = 3 * 2 * 14 * 14 = 1176 features per patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vision.sizing import (
    FACTOR,
    FETCH_MIN_PIXELS,
    MAX_PIXELS,
    MAX_RATIO,
    MERGE,
    MIN_PIXELS,
    PATCH,
    TEMPORAL,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    VIDEO_TOTAL_PIXELS,
    ImageError,
    image_sizes,
    smart_resize,
    video_fetch_max_pixels,
    video_sizes,
)

__all__ = ["CLIP_MEAN", "CLIP_STD", "FACTOR", "FETCH_MIN_PIXELS", "MAX_PIXELS", "MAX_RATIO", "MERGE", "MIN_PIXELS",
           "PATCH", "TEMPORAL", "VIDEO_MAX_PIXELS", "VIDEO_MIN_PIXELS", "VIDEO_TOTAL_PIXELS", "ImageError",
           "image_sizes", "patchify", "pil_resize", "preprocess_frames", "preprocess_image", "preprocess_video",
           "resize_video_frame", "smart_resize", "token_count", "torch_resize", "video_fetch_max_pixels", "video_sizes"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


def pil_resize(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """PIL bicubic resize of an HxWx3 uint8 array (a no-op at the same size, as in PIL)."""
    from PIL import Image

    if arr.shape[:2] == (h, w):
        return arr
    return np.asarray(Image.fromarray(arr.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC))


def torch_resize(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bicubic resize with antialias in float32, clamped and rounded to uint8 (torchvision's tensor resize,
    which Ming's ``fetch_video`` uses); a no-op at the same size."""
    if arr.shape[:2] == (h, w):
        return arr
    x = torch.from_numpy(np.require(arr, requirements=["C", "W"])).permute(2, 0, 1)[None].float()
    y = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return y.clamp_(0, 255).round_().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def resize_video_frame(arr: np.ndarray, fetched: tuple[int, int], final: tuple[int, int]) -> np.ndarray:
    """One frame through Ming's two video resizes: ``fetch_video`` (torch bicubic), then the processor (PIL)."""
    return pil_resize(torch_resize(arr, *fetched), *final)


def patchify(frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """[F, H, W, 3] uint8 (F a multiple of 2, sides multiples of 28) -> (pixel_values [P, C], grid_thw [1, 3])."""
    n_frames, H, W = frames.shape[:3]
    if n_frames % TEMPORAL or H % FACTOR or W % FACTOR:
        raise ImageError(f"{n_frames} frames of {W}x{H}: need an even count and sides that are multiples of {FACTOR}")
    # transformers' rescale: float64 multiply, then float32; normalise in float32.
    x = torch.from_numpy((np.asarray(frames, dtype=np.float64) * (1 / 255)).astype(np.float32))  # [F, H, W, 3]
    x = ((x - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).permute(0, 3, 1, 2)  # [F, 3, H, W]
    gt, gh, gw = n_frames // TEMPORAL, H // PATCH, W // PATCH
    x = x.reshape(gt, TEMPORAL, 3, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    # -> (t, h/2, w/2, 2, 2) patches, each flattened as (channel, temporal, py, px) like Conv3d weights.
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = x.reshape(gt * gh * gw, 3 * TEMPORAL * PATCH * PATCH).contiguous()
    return pixel_values, torch.tensor([[gt, gh, gw]], dtype=torch.long)


def preprocess_image(img: object, *, min_pixels: int = MIN_PIXELS,
                     max_pixels: int = MAX_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """One image (PIL or HxWx3 uint8) -> (pixel_values [P, 1176], grid_thw [1, 3] with t = 1).

    ``min_pixels``/``max_pixels`` are the image processor's limits (``preprocessor_config.json``); the
    fetch step before it always uses Ming's 3,136..802,816.

    Raises:
        ImageError: empty image, wrong shape or extreme aspect ratio.
    """
    arr = _to_rgb_array(img)
    fetched, final = image_sizes(arr.shape[0], arr.shape[1], min_pixels=min_pixels, max_pixels=max_pixels)
    arr = pil_resize(pil_resize(arr, *fetched), *final)
    return patchify(np.stack([arr] * TEMPORAL))


def _same_size_frames(frames: Sequence[object]) -> list[np.ndarray]:
    if len(frames) == 0:
        raise ImageError("video has no frames")
    arrs = [_to_rgb_array(f) for f in frames]
    if len({a.shape for a in arrs}) != 1:
        raise ImageError(f"video frames differ in size: {sorted({a.shape for a in arrs})}")
    if len(arrs) % TEMPORAL:  # Ming always samples an even count; an odd one repeats the last frame
        arrs.append(arrs[-1])
    return arrs


def preprocess_video(frames: Sequence[object], *, min_pixels: int = VIDEO_MIN_PIXELS,
                     max_pixels: int = VIDEO_MAX_PIXELS,
                     total_pixels: int = VIDEO_TOTAL_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded frames at their source size -> (pixel_values, grid_thw [1, 3]), sized like Ming's video path.

    Raises:
        ImageError: no frames, empty frames or frames of different sizes.
    """
    arrs = _same_size_frames(frames)
    fetched, final = video_sizes(arrs[0].shape[0], arrs[0].shape[1], len(arrs), min_pixels=min_pixels,
                                 max_pixels=max_pixels, total_pixels=total_pixels)
    return patchify(np.stack([resize_video_frame(a, fetched, final) for a in arrs]))


def preprocess_frames(frames: Sequence[object]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames already sized by the video loader (sides multiples of 28) -> (pixel_values, grid_thw).

    Raises:
        ImageError: no frames, frames of different sizes, or sides that are not multiples of 28.
    """
    return patchify(np.stack(_same_size_frames(frames)))


def token_count(grid_thw: torch.Tensor) -> int:
    """LLM tokens for one item: t * h * w / 4 (after the 2x2 merge)."""
    t, h, w = (int(v) for v in grid_thw.reshape(-1)[:3])
    return t * h * w // (MERGE * MERGE)
