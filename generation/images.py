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
    """RGB PIL image -> ``[1, 3, H, W]`` float in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` in [-1, 1] -> ``[B, H, W, 3]`` uint8."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
