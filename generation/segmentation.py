"""Segmentation as editing (Ming's "generative segmentation"): the target painted, the mask by differencing.

Ming-Lite-Omni 1.5 segments by editing: the instruction is rewritten into the referring-segmentation
prompt its README shows ("Given the following instructions: <target>; please perform referring
segmentation on this image."), the edit paints the target in a flat colour over an otherwise
unchanged image (``colourise`` builds that ideal target), and the mask is recovered from the edit. The mask is where the output differs from the input by more than ``threshold`` (max
over RGB channels, 0..255), optionally also close to the paint colour, cleaned by a morphological
opening (removes thin noise: VAE round-trip error, JPEG ringing) and by dropping connected
components smaller than ``min_area`` pixels. Morphology runs on torch (max-pool) so no extra
dependency is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from generation.images import aspect_bucket

MASK_COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def segmentation_instruction(target: str) -> str:
    """Ming's referring-segmentation prompt for ``target`` (the wording of Ming 1.5's README example)."""
    target = " ".join(target.split())
    if not target:
        raise ValueError("segmentation target is empty")
    return f"Given the following instructions: {target}; please perform referring segmentation on this image."


def colourise(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """Return ``image`` (``HxWx3`` uint8) with ``mask`` pixels set to ``colour``: the ideal edit output."""
    out = image.copy()
    out[mask.astype(bool)] = np.asarray(colour, dtype=np.uint8)
    return out


@dataclass
class MaskFilter:
    """Noise filtering for ``recover_mask``.

    Attributes:
        threshold: Minimum per-pixel change (max over channels, 0..255) counted as edited.
        colour: If set, an edited pixel must also be within ``colour_tolerance`` of this RGB colour.
        colour_tolerance: Max channel distance to ``colour``.
        open_radius: Radius of the square structuring element of the opening (0 disables).
        min_area: Connected components (8-connected) with fewer pixels are dropped (0 disables).
    """

    threshold: int = 48
    colour: tuple[int, int, int] | None = None
    colour_tolerance: int = 64
    open_radius: int = 1
    min_area: int = 16


def recover_mask(before: np.ndarray | PIL.Image.Image, after: np.ndarray | PIL.Image.Image,
                 filt: MaskFilter | None = None) -> np.ndarray:
    """Binary mask (``HxW`` bool) of the pixels the edit changed, with noise filtered out.

    Raises:
        ValueError: The two images differ in size.
    """
    filt = filt or MaskFilter()
    a = np.asarray(before.convert("RGB") if isinstance(before, PIL.Image.Image) else before, dtype=np.int16)
    b = np.asarray(after.convert("RGB") if isinstance(after, PIL.Image.Image) else after, dtype=np.int16)
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    mask = np.abs(b - a).max(axis=-1) > filt.threshold
    if filt.colour is not None:
        mask &= np.abs(b - np.asarray(filt.colour, dtype=np.int16)).max(axis=-1) <= filt.colour_tolerance
    m = torch.from_numpy(mask)[None, None].float()  # [1, 1, H, W]
    if filt.open_radius > 0:
        m = _dilate(_erode(m, filt.open_radius), filt.open_radius)
    if filt.min_area > 0:
        m = _drop_small_components(m, filt.min_area)
    return m[0, 0].bool().numpy()


def _erode(m: torch.Tensor, r: int) -> torch.Tensor:
    # outside the image counts as "on" so that regions touching the border are not eaten away
    return -F.max_pool2d(F.pad(-m, (r, r, r, r), value=-1.0), 2 * r + 1, stride=1)


def _dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(F.pad(m, (r, r, r, r), value=0.0), 2 * r + 1, stride=1)


def _drop_small_components(m: torch.Tensor, min_area: int) -> torch.Tensor:
    """Label 8-connected components by max-label propagation, then drop the small ones."""
    h, w = m.shape[-2:]
    on = m > 0
    labels = torch.where(on, torch.arange(1, h * w + 1, dtype=torch.float32).reshape(1, 1, h, w), 0.0)
    for _ in range(h * w):  # converges in (longest geodesic path) iterations
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * on
        if torch.equal(grown, labels):
            break
        labels = grown
    ids, counts = torch.unique(labels[on], return_counts=True)
    keep = ids[counts >= min_area]
    return (torch.isin(labels, keep) & on).float()


def mask_to_input(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Map a mask on the bucket crop (``fit_to_bucket``) back onto the ``height x width`` input (nearest)."""
    (bh, bw), (rh, rw) = aspect_bucket(height, width)
    canvas = np.zeros((max(rh, bh), max(rw, bw)), dtype=bool)
    top, left = int(round((canvas.shape[0] - bh) / 2.0)), int(round((canvas.shape[1] - bw) / 2.0))
    canvas[top:top + bh, left:left + bw] = mask
    canvas = canvas[(canvas.shape[0] - rh) // 2:(canvas.shape[0] - rh) // 2 + rh,
                    (canvas.shape[1] - rw) // 2:(canvas.shape[1] - rw) // 2 + rw]
    img = PIL.Image.fromarray(canvas.astype(np.uint8) * 255).resize((width, height), PIL.Image.NEAREST)
    return np.asarray(img) > 127
