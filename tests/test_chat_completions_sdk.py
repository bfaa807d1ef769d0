"""Chat completions as an SDK user expects them, driven by the official ``openai`` package against the
full ``omni-agent serve`` app (engine, agent graph, talker and codec) on 127.0.0.1."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
import soundfile as sf
from PIL import Image

from omni_agent.commands.serve import build_app
from omni_agent.realtime.testing import LiveServer
from omni_agent.settings import Settings

HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("sessions") / "sessions.sqlite"
    settings = Settings.model_validate({"engine": {"kv_cache_mb": 32, "default_max_tokens": 16},
                                        "agent": {"checkpoint_db": str(db)}})
    with LiveServer(build_app(settings), lifespan="on") as server:
        yield openai.OpenAI(base_url=server.http + "/v1", api_key="unused", max_retries=0, timeout=120)


def png_bytes(seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_models_retrieve_and_unknown_model(client):
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4o")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as e:  # never silently answered by whatever is loaded
        client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=2)
    assert e.value.code == "model_not_found"
    assert "`gpt-4o` does not exist" in e.value.message


def test_n_choices(client):
    r = client.chat.completions.create(model="tiny", messages=HI, n=3, max_tokens=6, temperature=1.0, seed=1)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content for c in r.choices)
    assert len({c.message.content for c in r.choices}) > 1  # seeds 1, 2, 3: different samples
    one = client.chat.completions.create(model="tiny", messages=HI, max_tokens=6, temperature=1.0, seed=1)
    assert one.choices[0].message.content == r.choices[0].message.content  # choice 0 keeps the request's seed
    assert r.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt is counted once
    assert r.usage.completion_tokens == 18  # every choice's tokens (6 each, random weights run to the cap)
    chunks = list(client.chat.completions.create(model="tiny", messages=HI, n=2, max_tokens=4, stream=True))
    finishes = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason}
    assert finishes == {0: "length", 1: "length"}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=HI, n=2, user="a-session")


def test_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 5
    for tok in content:
        assert tok.logprob <= 0 and len(tok.top_logprobs) == 3
        assert tok.top_logprobs[0].logprob == pytest.approx(tok.logprob)  # greedy: the chosen token is the top one
        assert tok.top_logprobs[0].logprob >= tok.top_logprobs[1].logprob >= tok.top_logprobs[2].logprob
    assert "".join(t.token for t in content) == r.choices[0].message.content
    streamed = [c for c in client.chat.completions.create(model="tiny", messages=HI, max_tokens=5, temperature=0,
                                                            logprobs=True, stream=True)]
    tokens = [t for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in tokens] == [t.token for t in content]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=HI, top_logprobs=2)  # without logprobs


def test_audio_output(client):
    r = client.chat.completions.create(model="tiny", messages=HI, max_tokens=8, modalities=["text", "audio"],
                                       audio={"voice": "eng", "format": "wav"})
    audio = r.choices[0].message.audio
    wave, sr = sf.read(io.BytesIO(base64.b64decode(audio.data)))
    assert sr == 24000 and len(wave) > 2400  # at least 0.1 s of speech from the talker and codec
    assert audio.transcript and audio.id.startswith("audio_") and audio.expires_at > 0
    assert r.choices[0].message.content is None
    stream = client.chat.completions.create(model="tiny", messages=HI, max_tokens=8, stream=True,
                                            modalities=["text", "audio"], audio={"voice": "eng", "format": "pcm16"})
    pcm, transcript = b"", ""
    for chunk in stream:
        delta = chunk.choices[0].delta.audio if chunk.choices else None
        if delta:
            pcm += base64.b64decode(delta.data or "")
            transcript += delta.transcript or ""
    assert len(pcm) > 4800 and len(pcm) % 2 == 0 and transcript
    for bad in ({"voice": "eng", "format": "mp3"}, {"voice": "alloy", "format": "wav"}, None):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="tiny", messages=HI, modalities=["text", "audio"], audio=bad)
    with pytest.raises(openai.BadRequestError) as e:  # a stream carries pcm16, as OpenAI's does
        client.chat.completions.create(model="tiny", messages=HI, stream=True, modalities=["text", "audio"],
                                       audio={"voice": "eng", "format": "wav"})
    assert "pcm16" in e.value.message


def test_file_parts_by_id(client):
    uploaded = client.files.create(file=("red.png", png_bytes()), purpose="vision")
    with_image = client.chat.completions.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_id": uploaded.id}}, {"type": "text", "text": "What is this?"}]}])
    without = client.chat.completions.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}]}])
    assert with_image.usage.prompt_tokens > without.usage.prompt_tokens + 8  # the image's tokens are in the prompt
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-doesnotexist"}}]}])
    pdf = base64.b64encode(b"%PDF-1.7\n...").decode()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "file", "file": {"file_data": pdf, "filename": "paper.pdf"}}]}])
    assert e.value.code == "unsupported_file"


def test_remote_media_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png?sig=secret"}},
            {"type": "text", "text": "What is this?"}]}])
    assert e.value.code == "remote_url_not_supported"
    assert e.value.body["message"].startswith("https://example.com/cat.png: this server does not fetch remote URLs")
    assert "secret" not in e.value.message
