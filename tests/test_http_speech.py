"""``POST /v1/audio/speech`` through the official openai SDK against a live server (demo TTS stack)."""

from __future__ import annotations

import io
import struct
from types import SimpleNamespace

import httpx
import numpy as np
import openai
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from audio.encode import encode_all, wav_header
from audio.tts import StreamingTTS
from omni_agent.server.errors import APIError, api_error_handler, http_error_handler, validation_error_handler
from omni_agent.server.speech import speech_router
from omni_agent.settings import Settings
from tests.test_http_api import start_app

TEXT = "Hello there, this is the speech endpoint. 这是第二句话，好吗？"


@pytest.fixture(scope="module")
def live():
    app = FastAPI()
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.include_router(speech_router(Settings(), StreamingTTS.build(seed=0)))
    server, thread, url = start_app(app)
    yield SimpleNamespace(url=url, client=openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0))
    server.should_exit = True
    thread.join(10)


def test_create_wav_and_streamed_pcm_agree(live):
    wav = live.client.audio.speech.create(model="ming", voice="eng", input=TEXT, response_format="wav").content
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", wav[24:28])[0] == 24000  # sample rate
    pcm_from_wav = wav[44:]
    assert len(pcm_from_wav) > 2 * 24000 * 0.5
    with live.client.audio.speech.with_streaming_response.create(
            model="ming", voice="eng", input=TEXT, response_format="pcm") as resp:
        assert resp.headers["content-type"] == "audio/pcm"
        parts = list(resp.iter_bytes())
    assert len(parts) >= 2  # sentences arrive as they are spoken
    assert b"".join(parts) == pcm_from_wav  # same seed, same audio


@pytest.mark.parametrize(("fmt", "container"), [("mp3", "mp3"), ("opus", "ogg"), ("flac", "flac")])
def test_compressed_formats_decode(live, fmt, container):
    import av

    data = live.client.audio.speech.create(model="ming", voice="luna", input="你好，世界。", response_format=fmt).content
    with av.open(io.BytesIO(data), format=container) as f:
        frames = [fr.to_ndarray() for fr in f.decode(audio=0)]
        rate = f.streams.audio[0].codec_context.sample_rate
    seconds = sum(fr.shape[-1] for fr in frames) / rate
    assert rate in (24000, 48000) and seconds > 0.2


@pytest.mark.parametrize(("kwargs", "msg"), [
    ({"voice": "alloy"}, "voice 'alloy' is not available"),
    ({"instructions": "whisper"}, "instructions are not supported"),
    ({"speed": 1.5}, "speed 1.5 is not supported"),
    ({"input": "   "}, "input is empty"),
    ({"input": "..."}, "nothing to speak"),
])
def test_refusals_are_400s(live, kwargs, msg):
    args = {"model": "ming", "voice": "eng", "input": "Hello.", **kwargs}
    with pytest.raises(openai.BadRequestError, match=msg):
        live.client.audio.speech.create(**args)


def test_disconnect_mid_stream_and_server_survives(live):
    with httpx.stream("POST", live.url + "/v1/audio/speech", timeout=60,
                      json={"model": "m", "input": TEXT * 3, "voice": "eng", "response_format": "pcm"}) as r:
        assert r.status_code == 200
        next(r.iter_raw())  # one chunk, then hang up
    r = httpx.post(live.url + "/v1/audio/speech", json={"input": "Hi there.", "response_format": "wav"}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"


def test_unknown_field_is_refused(live):
    r = httpx.post(live.url + "/v1/audio/speech", json={"input": "Hi.", "pitch": 2}, timeout=30)
    assert r.status_code == 400 and "pitch" in r.json()["error"]["message"]


def test_whole_wav_header_sizes():
    pcm = np.zeros(100, np.float32)
    data = encode_all(pcm, "wav")
    assert data[:44] == wav_header(24000, 100) and len(data) == 44 + 200
    assert struct.unpack("<I", wav_header(24000, None)[40:44])[0] == 0xFFFFFFFF
