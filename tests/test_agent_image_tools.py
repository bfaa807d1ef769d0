"""The agent's image tools on Ming's head (tiny thinker + tiny random decoder): generate, edit, segment."""

from __future__ import annotations

import asyncio

import pytest

from omni_agent.agent.artifacts import ArtifactStore
from omni_agent.agent.image_tools import EditImageArgs, GenerateImageArgs, ImageTools, SegmentImageArgs
from omni_agent.agent.tools import ToolContext


@pytest.fixture(scope="module")
def tools():
    from types import SimpleNamespace

    from omni_agent.model.processor import OmniProcessor
    from omni_agent.model.thinker import Thinker

    engine = SimpleNamespace(thinker=Thinker.from_preset("tiny"), processor=OmniProcessor.for_preset("tiny"))
    return ImageTools.build(engine, ArtifactStore(), steps=1)


def _ctx(events):
    return ToolContext(call_id="c1", tool_name="t", progress=events.append, cancel=asyncio.Event())


def test_generate_edit_segment_store_artifacts(tools):
    events = []
    gen = tools.generate(GenerateImageArgs(prompt="a red cube", width=640, height=384, seed=1), _ctx(events))
    assert (gen.content["width"], gen.content["height"]) == (640, 384)  # a Ming bucket, kept as asked
    assert events and events[-1]["step"] == events[-1]["total"] == 1
    edit = tools.edit(EditImageArgs(image_id=gen.content["image_id"], instruction="make it blue"), _ctx(events))
    assert (edit.content["width"], edit.content["height"]) == (640, 384)
    seg = tools.segment(SegmentImageArgs(image_id=gen.content["image_id"], target="the cube"), _ctx(events))
    mask = tools.artifacts.load_image(seg.content["mask_id"])
    assert mask.size == (640, 384) and 0.0 <= seg.content["area_fraction"] <= 1.0
    with pytest.raises(ValueError, match="no image with id"):
        tools.edit(EditImageArgs(image_id="art_" + "0" * 24, instruction="x"), _ctx(events))
