"""The real path: the serve command's app (tiny thinker + streaming TTS) answering a spoken turn."""

import base64

import pytest

from omni_agent.realtime.testing import LiveServer, RealtimeClient, stream_audio, utterance
from omni_agent.settings import Settings


@pytest.fixture(scope="module")
def server():
    from omni_agent.commands.serve import build_app

    with LiveServer(build_app(Settings()), lifespan="on") as srv:
        yield srv


async def test_spoken_turn_with_the_tiny_model(server):
    c = await RealtimeClient.connect(server.url)
    await c.wait_for("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 8, "tool_choice": "none", "audio": {
        "input": {"transcription": {"model": "omni-asr", "language": "en"}}}}})
    await c.wait_for("session.updated")
    await stream_audio(c, utterance("Hello, can you hear me?", 0.4, 1.0))
    done = await c.wait_for("response.done", timeout=240)
    assert done["response"]["status"] in ("completed", "incomplete")
    audio = b"".join(base64.b64decode(e["delta"]) for e in c.of("response.output_audio.delta"))
    assert len(audio) > 2 * 2400  # more than 100 ms of speech
    usage = done["response"]["usage"]
    assert 0 < usage["output_token_details"]["text_tokens"] <= 8  # max_output_tokens bounds the model's tokens
    assert usage["output_token_details"]["audio_tokens"] > 0  # the speech's codec tokens, reported beside them
    assert done["response"]["latency"]["first_audio_ms"] > 0
    # the input transcription ran through the thinker (gibberish with random weights, but it ran)
    ev = await c.wait_for("conversation.item.input_audio_transcription.completed", timeout=120)
    assert isinstance(ev["transcript"], str)
    await c.close()


async def test_barge_in_with_the_tiny_model(server):
    c = await RealtimeClient.connect(server.url)
    await c.wait_for("session.created")
    await c.send({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 200, "tool_choice": "none"}})
    turn = utterance("Tell me a long story please.", 0.4, 1.0)
    await stream_audio(c, turn)
    created = await c.wait_for("response.created", timeout=120)
    await c.wait_for("response.output_audio.delta", timeout=240)
    await stream_audio(c, turn, realtime=1.0)
    done = await c.wait_for("response.done", timeout=120)
    assert done["response"]["id"] == created["response"]["id"]
    assert done["response"]["status"] == "cancelled"
    # the model's own timing survives the cancel (the runtime's overhead is computed from it)
    assert done["response"]["latency"]["first_audio_ms"] > 0
    sent = sum(len(base64.b64decode(e["delta"])) // 2 for e in c.of("response.output_audio.delta")
               if e["response_id"] == created["response"]["id"])
    item_id = done["response"]["output"][0]["id"]
    await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
    got = await c.wait_for("conversation.item.retrieved")
    assert len(base64.b64decode(got["item"]["content"][0]["audio"])) // 2 == sent  # what was written, no more
    await c.close()
