"""``omni-agent chat`` without audio hardware: a WAV in, the answer's audio in a WAV out."""

import asyncio

import numpy as np
import soundfile as sf

from omni_agent.cli import main
from omni_agent.realtime.testing import SR, FakeResponder, LiveServer, make_app, utterance
from omni_agent.settings import Settings


async def test_chat_with_wavs(tmp_path, capsys):
    wav_in, wav_out = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(wav_in, utterance("Hello there, how are you?", 0.3, 0.2), SR)
    settings = Settings.model_validate({"server": {"api_key": "sk-chat"}})
    with LiveServer(make_app(settings, FakeResponder(steps=2))) as srv:
        rc = await asyncio.to_thread(main, ["chat", "--url", srv.url, "--api-key", "sk-chat", "--input-wav",
                                            str(wav_in), "--output-wav", str(wav_out), "--no-speaker",
                                            "--timeout", "60"])
    assert rc == 0
    audio, sr = sf.read(wav_out)
    assert sr == SR and abs(len(audio) - 2 * 0.2 * SR) < 10
    assert np.abs(audio).max() > 0.1
    out = capsys.readouterr()
    assert "hello there." in out.out


async def test_chat_text_turn_and_refused_key(tmp_path, capsys):
    settings = Settings.model_validate({"server": {"api_key": "sk-chat"}})
    with LiveServer(make_app(settings, FakeResponder(steps=1))) as srv:
        rc = await asyncio.to_thread(main, ["chat", "--url", srv.url, "--api-key", "wrong", "--text", "hi",
                                            "--no-speaker"])
        assert rc == 1
        assert "cannot connect" in capsys.readouterr().err
        rc = await asyncio.to_thread(main, ["chat", "--url", srv.url, "--api-key", "sk-chat", "--text", "hi",
                                            "--no-speaker", "--timeout", "30"])
    assert rc == 0
    assert "hello there." in capsys.readouterr().out
