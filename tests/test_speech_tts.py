"""Streaming TTS: every sentence streams, stream == synthesize, cancel, errors, CLI and bench."""

import asyncio

import numpy as np
import pytest
import torch

from audio.talker import TalkerError
from audio.tts import StreamingTTS

TEXT = "今天天气很好，我们一起去公园散步吧。然后我们一起去吃饭，好不好？"  # three sentences by Ming's rules


@pytest.fixture(scope="module")
def tts():
    return StreamingTTS.build(seed=0)


async def deltas(text, step=4, delay=0.0):
    for i in range(0, len(text), step):
        yield text[i:i + step]
        await asyncio.sleep(delay)


async def collect(agen):
    return [c async for c in agen]


def test_every_sentence_streams_and_equals_offline(tts):
    assert tts.sample_rate == 24000
    chunks = asyncio.run(collect(tts.stream(deltas(TEXT))))
    idx = [c.sentence_index for c in chunks]
    assert idx == sorted(idx) and set(idx) == {0, 1, 2}
    for i in range(2):  # sentences long enough for two decoder blocks arrive in several chunks
        assert idx.count(i) >= 2, idx
    assert all(c.pcm.dtype == np.float32 and c.pcm.ndim == 1 for c in chunks)
    streamed = np.concatenate([c.pcm for c in chunks])
    offline = tts.synthesize(TEXT)
    assert streamed.shape == offline.shape
    assert np.abs(streamed - offline).max() < 1e-5


def test_cancel_mid_stream_stops_within_one_chunk(tts):
    async def run():
        cancel = asyncio.Event()
        got = []
        async for chunk in tts.stream(deltas(TEXT * 3), cancel=cancel):
            got.append(chunk)
            if len(got) == 2:
                cancel.set()
        return got

    got = asyncio.run(run())
    assert len(got) == 2  # nothing after the cancel


def test_cancel_while_waiting_for_text(tts):
    async def run():
        cancel = asyncio.Event()

        async def slow_text():
            yield "Hi"
            await asyncio.sleep(3600)  # the thinker stalls

        async def stopper():
            await asyncio.sleep(0.2)
            cancel.set()

        task = asyncio.create_task(stopper())
        out = await asyncio.wait_for(collect(tts.stream(slow_text(), cancel=cancel)), timeout=30)
        await task
        return out

    assert asyncio.run(run()) == []


def test_hidden_states_condition_the_speech(tts):
    d = tts.talker.config.thinker_hidden_size
    text = "Short test sentence for hidden states here."

    async def hidden():
        yield torch.randn(5, d, generator=torch.Generator().manual_seed(0))

    plain = np.concatenate([c.pcm for c in asyncio.run(collect(tts.stream(deltas(text))))])
    cond = np.concatenate([c.pcm for c in asyncio.run(collect(tts.stream(deltas(text), hidden=hidden())))])
    assert plain.shape != cond.shape or not np.allclose(plain, cond)


def test_empty_and_bad_inputs(tts):
    assert asyncio.run(collect(tts.stream(deltas("")))) == []
    assert asyncio.run(collect(tts.stream(deltas("   ...")))) == []
    with pytest.raises(TalkerError, match="nothing to speak"):
        tts.synthesize("")

    async def bad_hidden():
        yield torch.zeros(2, 3)

    with pytest.raises(TalkerError, match="thinker states"):
        asyncio.run(collect(tts.stream(deltas("One two three four five six seven eight nine ten eleven twelve."),
                                       hidden=bad_hidden())))


def test_cli_tts_writes_wav(tmp_path):
    import soundfile as sf

    from omni_agent.cli import main

    out = tmp_path / "a.wav"
    assert main(["tts", "Hello world, this is a test.", "-o", str(out)]) == 0
    wave, sr = sf.read(out)
    assert sr == 24000 and len(wave) > 24000 * 0.3
    out2 = tmp_path / "b.wav"
    assert main(["tts", "你好，世界。", "-o", str(out2), "--codes-from-text", "--lang", "cmn"]) == 0
    wave, sr = sf.read(out2)
    assert sr == 24000 and np.abs(wave).max() > 0.05


def test_bench_quick_smoke(tmp_path, monkeypatch):
    from omni_agent.bench import BenchContext, registry
    from omni_agent.settings import Settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = registry()["speech"].fn(BenchContext(settings=Settings(), quick=True, options={"minutes": "0.15"}))
    for key in ("codes_hz", "bpe_tokens_hz", "bpe_rate_reduction", "roundtrip_exact", "detok_rtf", "first_chunk_ms"):
        assert key in result
    assert 49 < result["codes_hz"] < 51
    assert result["bpe_tokens_hz"] < result["codes_hz"]
    assert result["roundtrip_exact"] is True
    assert result["detok_rtf"] > 0 and result["first_chunk_ms"] > 0
    assert list(tmp_path.glob("omni-agent/speech-bench/*.npz"))  # the held-out speech is cached


def test_text_source_error_propagates(tts):
    async def broken():
        yield "Hello"
        raise RuntimeError("thinker failed")

    with pytest.raises(RuntimeError, match="thinker failed"):
        asyncio.run(collect(tts.stream(broken())))


def test_build_matches_the_thinker_width(tts):
    from omni_agent.model.config import ThinkerConfig

    assert tts.talker.config.thinker_hidden_size == ThinkerConfig.preset("tiny").hidden_size


@pytest.mark.slow
def test_bench_full_meets_targets():
    """The reported figures: >= 5 min held-out speech, BPE -35% or better, detokenizer RTF < 0.3."""
    from omni_agent.bench import BenchContext, registry
    from omni_agent.settings import Settings

    result = registry()["speech"].fn(BenchContext(settings=Settings()))
    assert result["heldout_minutes"] >= 5.0
    assert result["bpe_rate_reduction"] >= 0.35
    assert result["detok_rtf"] < 0.3
    assert result["roundtrip_exact"] is True


def test_cli_tts_voices(tmp_path, capsys):
    import shutil

    import soundfile as sf

    from omni_agent.cli import main

    prompt = tmp_path / "my_voice.pt"
    shutil.copy("audio/voices/luna_v2.pt", prompt)
    out = tmp_path / "v.wav"
    assert main(["tts", "你好，世界。", "-o", str(out), "--voice", str(prompt)]) == 0
    assert sf.info(out).samplerate == 24000
    assert main(["tts", "Hello.", "-o", str(out), "--voice", "bob"]) == 1
    assert "unknown voice 'bob'" in capsys.readouterr().err


def test_checkpoint_with_the_talker_uses_mings_stack_or_fails(capsys):
    """A release checkpoint never falls back to the demo codec: its detokenizer must load."""
    from omni_agent.cli import main

    release = "tests/fixtures/ming_talker/release"
    assert main(["tts", "Hello.", "-o", "/dev/null", "--model-path", release]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("omni-agent: error")]
    assert len(err) == 1 and "release/talker" in err[0]


def test_voice_pick_follows_ming(tts):
    from audio.tts import default_voice

    assert default_voice("你好") == "luna" and default_voice("Hello") == "eng"
    assert tts.voice(None, "你好").name == "luna" and tts.voice("eng", "你好").name == "eng"
    assert tts.voice("default", "Hi").name == "eng"  # the realtime session's default voice


def test_sentence_too_long_for_the_voice_prompt_is_cut(tts):
    voice = tts.voice("luna", "")
    parts = tts._fit("这是一个非常非常长的句子，它比语音提示还要长得多，所以必须把它切成几段才能说出来。", voice)
    assert len(parts) >= 2 and "".join(parts).replace(" ", "") == \
        "这是一个非常非常长的句子，它比语音提示还要长得多，所以必须把它切成几段才能说出来。"
    for p in parts:
        tts.talker.prefix_ids(p, voice)  # fits


def test_a_detokenizer_that_takes_the_voice_prompt_gets_it(tts):
    """The glue for Ming's detokenizer: ``stream_decoder(voice=...)`` receives the sentence's voice."""
    seen = []

    class Decoder:
        def __init__(self, voice):
            self.voice, self.codes = voice, 0
            seen.append(self)

        def push(self, codes):
            self.codes += len(codes)
            return np.zeros(480 * len(codes), np.float32)

        def flush(self):
            return np.zeros(0, np.float32)

    class VoiceCodec:
        name, sample_rate = "voice-codec", 24000

        def stream_decoder(self, *, voice):
            return Decoder(voice)

    ming_like = StreamingTTS(tts.talker, VoiceCodec(), seed=0)
    pcm = ming_like.synthesize("Hello there, this is one sentence of a test for you.", voice="eng")
    assert [d.voice.name for d in seen] == ["eng"] and len(pcm) == 480 * seen[0].codes > 0
    tokens, mel, spk = seen[0].voice.detokenizer_prompt()
    assert tokens.shape == (324,) and mel.shape == (324, 80) and spk.shape == (192,)
