"""Segmentation as editing: the mask comes back exactly from a synthetic edit with noise."""

import numpy as np
import PIL.Image
import pytest
import torch

from generation.segmentation import MaskFilter, colourise, recover_mask, segmentation_instruction


def _scene(seed=0, h=64, w=80):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 3) % 256, (yy * 4) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:30, 12:40] = True  # a rectangle
    mask[40:60, 50:76] = True  # a second object, touching nothing
    mask[0:6, 70:80] = True  # one touching the border
    return img, mask


def test_mask_recovery_is_exact_with_noise_and_speckles():
    img, mask = _scene()
    out = colourise(img, mask, (255, 0, 0)).astype(int)
    rng = np.random.default_rng(1)
    out = out + rng.integers(-12, 13, out.shape)  # VAE / JPEG-like small noise everywhere
    for y, x in [(50, 5), (5, 5), (33, 45), (62, 2)]:  # isolated large changes (speckles)
        out[y, x] = 255 - img[y, x]
    out[20:22, 60:62] = 0  # a 2x2 blob: removed by the opening
    out = np.clip(out, 0, 255).astype(np.uint8)
    got = recover_mask(img, out, MaskFilter(threshold=48, open_radius=1, min_area=16))
    assert got.shape == mask.shape
    assert np.array_equal(got, mask)


def test_small_components_are_dropped_but_large_kept():
    img, mask = _scene()
    small = np.zeros_like(mask)
    small[50:53, 2:5] = True  # 3x3 survives the opening, but is below min_area
    out = colourise(img, mask | small)
    got = recover_mask(img, out, MaskFilter(open_radius=1, min_area=16))
    assert np.array_equal(got, mask)
    kept = recover_mask(img, out, MaskFilter(open_radius=1, min_area=0))
    assert np.array_equal(kept, mask | small)


def test_colour_filter_ignores_changes_of_another_colour():
    img, mask = _scene()
    out = colourise(img, mask, (255, 0, 0))
    out[45:55, 2:20] = (0, 255, 0)  # a green change elsewhere
    got = recover_mask(img, out, MaskFilter(colour=(255, 0, 0), colour_tolerance=40))
    assert np.array_equal(got, mask)


def test_size_mismatch_and_pil_inputs():
    img, mask = _scene()
    out = colourise(img, mask)
    got = recover_mask(PIL.Image.fromarray(img), PIL.Image.fromarray(out))
    assert np.array_equal(got, mask)
    with pytest.raises(ValueError, match="differ in size"):
        recover_mask(img, out[:-1])


def test_instruction_is_mings_referring_segmentation_prompt():
    s = segmentation_instruction(" the  dog ")
    assert s == "Given the following instructions: the dog; please perform referring segmentation on this image."
    with pytest.raises(ValueError, match="empty"):
        segmentation_instruction("  ")


def test_segment_end_to_end_returns_input_sized_mask():
    from generation.pipeline import OmniImagePipeline

    pipe = OmniImagePipeline.from_preset("tiny", seed=0)
    cond = torch.randn(1, 256, pipe.config.llm_hidden_size, generator=torch.Generator().manual_seed(0))
    img = PIL.Image.fromarray(_scene(h=40, w=50)[0])
    seg = pipe.segment(cond, img, steps=1)
    assert seg.mask.shape == (40, 50) and seg.mask.dtype == bool
    assert seg.edited.size == (544, 448)  # Ming's bucket for a 40x50 (h x w) input: 448x544


def test_mask_maps_back_through_the_bucket_crop():
    from generation.images import fit_to_bucket
    from generation.segmentation import mask_to_input

    img = PIL.Image.new("RGB", (300, 200))  # bucket 416x608, resized to 416x624, 8 px cropped each side
    img.paste((255, 255, 255), (100, 50, 200, 150))
    fitted = np.asarray(fit_to_bucket(img))[..., 0] > 127
    back = mask_to_input(fitted, 200, 300)
    truth = np.asarray(img)[..., 0] > 127
    assert back.shape == (200, 300) and (back != truth).mean() < 0.01
