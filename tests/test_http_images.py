"""``POST /v1/images/generations`` and ``/v1/images/edits`` through the official ``openai`` SDK (tiny head)."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import numpy as np
import openai
import pytest
from PIL import Image

from tests.test_http_api import live  # noqa: F401  (the live-server fixture, one per module)

FAST = {"steps": 1, "seed": 3}


def _png(w: int = 90, h: int = 60) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_generate_b64_and_url(live):  # noqa: F811
    r = live.client.images.generate(prompt="a red cube", size="600x400", n=2, response_format="b64_json",
                                    extra_body=FAST)
    imgs = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in r.data]
    assert len(imgs) == 2 and imgs[0].size == (608, 416)  # Ming's aspect bucket for 600x400
    assert r.size == "608x416"
    again = live.client.images.generate(prompt="a red cube", size="600x400", n=2, response_format="b64_json",
                                        extra_body=FAST)
    assert again.data[0].b64_json == r.data[0].b64_json  # same seed, same image
    u = live.client.images.generate(prompt="a red cube", response_format="url", extra_body=FAST)
    assert u.data[0].url.startswith(live.url + "/v1/artifacts/art_")  # served by the artifacts router
    data, mime, _ = live.responder.artifacts.get(u.data[0].url.rsplit("/", 1)[1])
    assert mime == "image/png" and Image.open(io.BytesIO(data)).size == (512, 512)


def test_edit_with_the_sdk(live):  # noqa: F811
    r = live.client.images.edit(image=("in.png", _png(), "image/png"), prompt="make it blue",
                                response_format="b64_json", extra_body=FAST)
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).size == (608, 416)  # bucket of 90x60


def test_unsupported_and_bad_inputs_are_400s_and_the_server_survives(live):  # noqa: F811
    c = live.client
    with pytest.raises(openai.BadRequestError, match="'mask' is not supported"):
        c.images.edit(image=("in.png", _png(), "image/png"), mask=("m.png", _png(), "image/png"), prompt="x",
                      extra_body=FAST)
    with pytest.raises(openai.BadRequestError, match="not an image"):
        c.images.edit(image=("in.png", b"not a png", "image/png"), prompt="x", extra_body=FAST)
    with pytest.raises(openai.BadRequestError, match="size must be"):
        c.images.generate(prompt="x", size="big", extra_body=FAST)
    with pytest.raises(openai.BadRequestError, match="'quality' is not supported"):
        c.images.generate(prompt="x", quality="hd", extra_body=FAST)
    with pytest.raises(openai.BadRequestError, match="n"):
        c.images.generate(prompt="x", n=11, extra_body=FAST)
    assert len(c.images.generate(prompt="still alive", response_format="b64_json", extra_body=FAST).data) == 1


def test_served_app_has_one_image_decoder(tmp_path):
    """``serve``'s app: the images endpoints run on the agent's own ImageTools, not a second decoder."""
    import torch
    from fastapi.testclient import TestClient

    from omni_agent.commands.serve import build_app
    from omni_agent.settings import Settings

    settings = Settings.model_validate({"engine": {"kv_cache_mb": 4},
                                        "agent": {"checkpoint_db": str(tmp_path / "s.sqlite")}})
    app = build_app(settings)
    shared = app.state.responder.image_tools
    assert shared is not None
    calls = []

    def pipeline(cond, *, height, width, **_):
        calls.append((tuple(cond.shape), height, width))
        return SimpleNamespace(images=[Image.new("RGB", (width, height))], width=width, height=height)

    # Stand-ins for the decoder the agent's instance would build: a second instance would build the real one.
    shared._pipeline, shared._conditioner = pipeline, lambda prompt, image=None: torch.zeros(1, 4, 8)
    with TestClient(app) as client:
        r = client.post("/v1/images/generations", json={"prompt": "a red cube", "size": "64x48",
                                                        "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    assert r.json()["size"] == "64x48" and calls == [((1, 4, 8), 48, 64)]
