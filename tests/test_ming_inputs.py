"""Images, video frames, placeholder counts and position ids equal to Ming's own preprocessing.

The fixtures come from ``scripts/fixtures/make_ming_input_fixtures.py`` (Ming's ``fetch_image``,
``fetch_video``, ``BailingMMImageProcessor``, chat template and ``get_rope_index`` in a side environment);
the inputs are rebuilt here from ``tests/ming_input_cases.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omni_agent.model.processor import OmniProcessor
from tests import ming_input_cases as cases
from vision.preprocess import image_sizes, preprocess_image, preprocess_video, video_sizes

FIXTURES = Path(__file__).parent / "fixtures" / "ming_inputs"
META = json.loads((FIXTURES / "cases.json").read_text())


@pytest.fixture(scope="module")
def ming() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "ming_inputs.npz") as z:
        return {k: z[k] for k in z.files}


def _check_item(ming: dict[str, np.ndarray], key: str, pv, grid) -> None:
    assert grid.reshape(-1).tolist() == ming[f"{key}/grid"].tolist()
    pv = pv.numpy()
    rows = cases.sampled_rows(pv.shape[0])
    np.testing.assert_allclose(pv[rows], ming[f"{key}/rows"], rtol=0, atol=1e-6)
    # Every patch through its sum and a weighted sum (1176 features: ~1e-6 each is ~1e-4 summed).
    np.testing.assert_allclose(cases.checksums(pv), ming[f"{key}/checksums"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("h,w", cases.IMAGE_SIZES, ids=[f"{h}x{w}" for h, w in cases.IMAGE_SIZES])
def test_image_pixels_and_grid_equal_ming(ming: dict[str, np.ndarray], h: int, w: int) -> None:
    key = f"image_{h}x{w}"
    fetched, final = image_sizes(h, w)
    assert list(fetched) == META["images"][key]["fetch_size"]
    pv, grid = preprocess_image(Image.fromarray(cases.synth_image(h, w)))
    assert [final[0] // 14, final[1] // 14] == grid.reshape(-1).tolist()[1:]
    _check_item(ming, key, pv, grid)


@pytest.mark.parametrize("name", list(cases.VIDEO_CASES))
def test_video_frames_and_grid_equal_ming(ming: dict[str, np.ndarray], name: str) -> None:
    h, w, n = cases.VIDEO_CASES[name]
    fetched, _ = video_sizes(h, w, n)
    assert list(fetched) == META["videos"][name]["fetch_size"]
    frames = cases.synth_frames(h, w, n)
    pv, grid = preprocess_video(list(frames))
    _check_item(ming, f"video_{name}", pv, grid)


def test_issue_examples() -> None:
    """The two differences issue 16 names: a 100x150 image and 112x112 video frames."""
    assert image_sizes(100, 150)[1] == (252, 336)  # grid (1, 18, 24): 108 tokens
    assert video_sizes(112, 112, 4)[1] == (336, 336)  # grid (2, 24, 24): 288 tokens


@pytest.mark.parametrize("name", list(cases.PROMPTS))
def test_prompt_ids_and_positions_equal_ming(ming: dict[str, np.ndarray], name: str) -> None:
    proc = OmniProcessor.for_preset("tiny")
    content = []
    for kind, value in cases.PROMPTS[name]:
        if kind == "text":
            content.append({"type": "text", "text": value})
        elif kind == "image":
            content.append({"type": "image", "image": Image.fromarray(cases.synth_image(*value))})
        else:
            h, w, n = cases.VIDEO_CASES[value]
            content.append({"type": "video", "video": list(cases.synth_frames(h, w, n))})
    p = proc([{"role": "user", "content": content}])
    key = f"prompt_{name}"
    assert p.input_ids.tolist() == ming[f"{key}/input_ids"].tolist()
    assert sum(it.length for it in p.mm_items) == META["prompts"][name]["placeholders"]
    assert p.position_ids.tolist() == ming[f"{key}/position_ids"].tolist()
    assert p.rope_delta == int(ming[f"{key}/rope_delta"])
