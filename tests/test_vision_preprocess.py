"""Image/video preprocessing: smart_resize bounds, patch layout, the vision encoder's token counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omni_agent.model.config import VisionConfig
from vision.encoder import VisionTransformer
from vision.preprocess import (
    MAX_PIXELS,
    MIN_PIXELS,
    ImageError,
    preprocess_frames,
    preprocess_image,
    smart_resize,
    token_count,
)


@pytest.mark.parametrize("h,w", [(28, 28), (480, 640), (1080, 1920), (4000, 3000), (100, 7000), (50, 50), (333, 777)])
def test_smart_resize_bounds(h: int, w: int) -> None:
    rh, rw = smart_resize(h, w)
    assert rh % 28 == 0 and rw % 28 == 0
    assert MIN_PIXELS <= rh * rw <= MAX_PIXELS
    assert 100 <= rh * rw // 784 <= 1024  # tokens after the 2x2 merge
    assert abs(rh / rw - h / w) / (h / w) < 0.35  # aspect ratio roughly kept


def test_smart_resize_known_values() -> None:
    assert smart_resize(480, 640) == (476, 644)  # already in range: nearest multiples of 28
    assert smart_resize(28, 28) == (280, 280)  # upscaled to the 100-token floor
    h, w = smart_resize(2000, 2000)
    assert (h, w) == (896, 896) and h * w <= MAX_PIXELS


def test_smart_resize_rejects_bad_sizes() -> None:
    with pytest.raises(ImageError, match="empty"):
        smart_resize(0, 10)
    with pytest.raises(ImageError, match="aspect ratio"):
        smart_resize(10, 5000)


def test_patch_layout_matches_merge_units() -> None:
    img = np.zeros((56, 56, 3), np.uint8)
    img[:28, 28:] = 255  # top-right merge unit white
    pv, grid = preprocess_image(img, min_pixels=1)
    assert grid.tolist() == [[1, 4, 4]] and pv.shape == (16, 3 * 2 * 14 * 14)
    white = pv.mean(dim=1) > 0  # normalised white is positive, black negative
    # merge unit order: unit 0 = top-left 2x2 patches, unit 1 = top-right
    assert white.tolist() == [False] * 4 + [True] * 4 + [False] * 8
    assert token_count(grid) == 4


def test_frames_to_temporal_patches() -> None:
    frames = [np.full((28, 28, 3), i * 40, np.uint8) for i in range(5)]  # odd count: last repeated
    pv, grid = preprocess_frames(frames)
    assert grid.tolist() == [[3, 2, 2]] and pv.shape[0] == 12
    with pytest.raises(ImageError, match="differ in size"):
        preprocess_frames([np.zeros((28, 28, 3), np.uint8), np.zeros((56, 28, 3), np.uint8)])


def test_vision_encoder_token_count_and_windows() -> None:
    cfg = VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, fullatt_block_indexes=[1],
                       out_hidden_size=48, window_size=56)  # windows of 2x2 merged tokens
    torch.manual_seed(0)
    vit = VisionTransformer(cfg)
    pv1, g1 = preprocess_image(np.random.default_rng(0).integers(0, 255, (84, 140, 3), dtype=np.uint8), min_pixels=1)
    pv2, g2 = preprocess_frames([np.zeros((56, 56, 3), np.uint8)] * 4)
    with torch.no_grad():
        both = vit(torch.cat([pv1, pv2]), torch.cat([g1, g2]))
        one = vit(pv1, g1)
    assert both.shape == (token_count(g1) + token_count(g2), 48)
    # Items never attend to each other: encoding together equals encoding alone.
    torch.testing.assert_close(both[: token_count(g1)], one, atol=1e-5, rtol=0)
    index, seg, frames = vit._windows(g1)
    assert sorted(index.tolist()) == list(range(token_count(g1)))
    assert seg.max().item() + 1 == 2 * 3  # 3x5 merged grid in 2x2 windows -> 2 x 3 windows
