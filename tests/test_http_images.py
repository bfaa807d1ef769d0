"""``POST /v1/images/generations`` and ``/v1/images/edits`` through the official ``openai`` SDK (tiny head)."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from omni_agent.agent.artifacts import artifacts_router
from omni_agent.agent.responder import AgentResponder
from omni_agent.engine import AsyncEngine
from omni_agent.server.app import create_app
from omni_agent.settings import Settings
from tests.test_http_api import start_app

FAST = {"steps": 1, "seed": 3}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    db = tmp_path_factory.mktemp("sessions") / "sessions.sqlite"
    settings = Settings.model_validate({"engine": {"kv_cache_mb": 16, "default_max_tokens": 16},
                                        "agent": {"checkpoint_db": str(db)}})
    engine = AsyncEngine.from_settings(settings)
    responder = AgentResponder.build(settings, engine, None)
    app = create_app(settings, engine, responder=responder, extra_routers=[artifacts_router(responder.artifacts)])
    server, thread, url = start_app(app)
    yield SimpleNamespace(url=url, client=openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0))
    server.should_exit = True
    thread.join(10)


def _png(w: int = 90, h: int = 60) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_generate_b64_and_url(live):
    r = live.client.images.generate(prompt="a red cube", size="600x400", n=2, response_format="b64_json",
                                    extra_body=FAST)
    imgs = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in r.data]
    assert len(imgs) == 2 and imgs[0].size == (608, 416)  # Ming's aspect bucket for 600x400
    assert r.size == "608x416"
    again = live.client.images.generate(prompt="a red cube", size="600x400", n=2, response_format="b64_json",
                                        extra_body=FAST)
    assert again.data[0].b64_json == r.data[0].b64_json  # same seed, same image
    u = live.client.images.generate(prompt="a red cube", response_format="url", extra_body=FAST)
    got = httpx.get(u.data[0].url)
    assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size == (512, 512)


def test_edit_with_the_sdk(live):
    r = live.client.images.edit(image=("in.png", _png(), "image/png"), prompt="make it blue",
                                response_format="b64_json", extra_body=FAST)
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json))).size == (608, 416)  # bucket of 90x60


def test_unsupported_and_bad_inputs_are_400s_and_the_server_survives(live):
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
