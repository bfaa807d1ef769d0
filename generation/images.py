"""Image input checks and conversions shared by the pipeline, the backends and the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import torch

MAX_INPUT_PIXELS = 64 * 2**20  # refuse decompression bombs before decoding (64 MPix)


class ImageInputError(ValueError):
    """A bad image or size from the caller, phrased for a one-line error message."""


def load_image(source: PIL.Image.Image | np.ndarray | bytes | str | Path) -> PIL.Image.Image:
    """Open an image from a PIL image, an ``HxWx3`` uint8 array, encoded bytes or a path, as RGB.

    Raises:
        ImageInputError: The bytes/file are not a decodable image, or it has a zero/oversize side.
    """
    if isinstance(source, PIL.Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] not in (3, 4) or source.dtype != np.uint8:
            raise ImageInputError(f"expected an HxWx3 uint8 array, got shape {source.shape} {source.dtype}")
        img = PIL.Image.fromarray(source)
    else:
        if isinstance(source, str | Path):
            path = Path(source)
            if not path.is_file():
                raise ImageInputError(f"image file {path} does not exist")
            data = path.read_bytes()
        elif isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
        else:
            raise ImageInputError(f"cannot read an image from {type(source).__name__}")
        if not data:
            raise ImageInputError("image data is empty")
        try:
            img = PIL.Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_INPUT_PIXELS:
                raise ImageInputError(f"image is {w}x{h}, more than {MAX_INPUT_PIXELS} pixels")
            img.load()
        except ImageInputError:
            raise
        except PIL.UnidentifiedImageError:
            raise ImageInputError(f"data is not an image in a known format ({len(data)} bytes, "
                                  f"starting {data[:8]!r})") from None
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as e:
            raise ImageInputError(f"image data is damaged or unreadable ({len(data)} bytes): {e}") from None
    if img.width == 0 or img.height == 0:
        raise ImageInputError(f"image has a zero-size side ({img.width}x{img.height})")
    return img.convert("RGB")


def check_size(height: int, width: int, *, multiple: int, max_side: int) -> None:
    """Raise ``ImageInputError`` unless both sides are positive multiples of ``multiple`` and <= ``max_side``."""
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ImageInputError(f"{name} must be an int, got {v!r}")
        if v <= 0:
            raise ImageInputError(f"{name} must be positive, got {v}")
        if v > max_side:
            raise ImageInputError(f"{name} {v} exceeds the largest supported side {max_side}")
        if v % multiple:
            raise ImageInputError(
                f"{name} {v} is not a multiple of {multiple} (VAE factor x patch size); "
                f"try {max(multiple, round(v / multiple) * multiple)}")


def snap_size(height: int, width: int, *, multiple: int, max_side: int) -> tuple[int, int]:
    """Round a size to the nearest multiple (at least one multiple), scaling down to fit ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    h = max(multiple, round(height * scale / multiple) * multiple)
    w = max(multiple, round(width * scale / multiple) * multiple)
    return min(h, max_side - max_side % multiple), min(w, max_side - max_side % multiple)


def pil_to_tensor(img: PIL.Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``[1, 3, H, W]`` float in [-1, 1], as Ming's processor: ``(x / 255 - 0.5) * 2``."""
    arr = (np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 - 0.5) * 2.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` in [-1, 1] -> ``[B, H, W, 3]`` uint8, as diffusers' image post-processing."""
    x = ((x.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# Ming's aspect-ratio buckets (``process_ratio`` in its bailingmm_utils.py): h/w ratio -> (height, width),
# all about 512^2 pixels. Ming snaps every generation size to one of these and fits edit inputs to them.
ASPECT_BUCKETS_512: tuple[tuple[float, tuple[int, int]], ...] = tuple((r, (h, w)) for r, h, w in (
    (0.25, 256, 1024), (0.26, 256, 992), (0.27, 256, 960), (0.28, 256, 928), (0.32, 288, 896),
    (0.33, 288, 864), (0.35, 288, 832), (0.4, 320, 800), (0.42, 320, 768), (0.48, 352, 736),
    (0.5, 352, 704), (0.52, 352, 672), (0.57, 384, 672), (0.6, 384, 640), (0.68, 416, 608),
    (0.72, 416, 576), (0.78, 448, 576), (0.82, 448, 544), (0.88, 480, 544), (0.94, 480, 512),
    (1.0, 512, 512), (1.07, 512, 480), (1.13, 544, 480), (1.21, 544, 448), (1.29, 576, 448),
    (1.38, 576, 416), (1.46, 608, 416), (1.67, 640, 384), (1.75, 672, 384), (2.0, 704, 352),
    (2.09, 736, 352), (2.4, 768, 320), (2.5, 800, 320), (2.89, 832, 288), (3.0, 864, 288),
    (3.11, 896, 288), (3.62, 928, 256), (3.75, 960, 256), (3.88, 992, 256), (4.0, 1024, 256),
))


def aspect_bucket(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Ming's ``process_ratio``: the bucket ``(h, w)`` closest in h/w ratio (first on ties), and the size
    ``(h, w)`` to resize to before a centre crop to the bucket (covers it, keeps the aspect ratio)."""
    if height <= 0 or width <= 0:
        raise ImageInputError(f"size must be positive, got {height}x{width}")
    ratio = height / width
    _, (bh, bw) = min(ASPECT_BUCKETS_512, key=lambda item: abs(item[0] - ratio))
    if bh / height > bw / width:
        return (bh, bw), (bh, int(width * bh / height))
    return (bh, bw), (int(height * bw / width), bw)


def fit_to_bucket(img: PIL.Image.Image) -> PIL.Image.Image:
    """Ming's edit-input handling: bilinear resize to cover the closest bucket, then centre crop to it
    (torchvision's ``resize`` + ``center_crop`` on a PIL image, zero padding where the crop overhangs)."""
    (bh, bw), (rh, rw) = aspect_bucket(img.height, img.width)
    img = img.convert("RGB").resize((rw, rh), PIL.Image.BILINEAR)
    if rw < bw or rh < bh:  # rounding in Ming's int() can leave one pixel short: torchvision pads with 0
        canvas = PIL.Image.new("RGB", (max(rw, bw), max(rh, bh)))
        canvas.paste(img, ((max(rw, bw) - rw) // 2, (max(rh, bh) - rh) // 2))
        img = canvas
    top = int(round((img.height - bh) / 2.0))
    left = int(round((img.width - bw) / 2.0))
    return img.crop((left, top, left + bw, top + bh))
