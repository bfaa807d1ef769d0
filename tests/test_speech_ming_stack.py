"""Ming's whole speech stack from one release folder: the talker and the detokenizer load together and
speak, streamed, with the sentence's voice prompt handed to the detokenizer (tiny random weights).

The talker's sampled ids are replaced here (random weights sample text ids, which Ming's BPE decode
rejects too), so this tests the glue: loading, sentences, the voice prompt, streaming. The talker's own
prefix, logits and sampling are checked against Ming's code in ``tests/test_ming_talker.py``."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from audio.codec.ming import MingDetokenizer, write_random_release
from audio.tts import OUTPUT_RATE, StreamingTTS

RELEASE = Path(__file__).parent / "fixtures" / "ming_talker" / "release"


@pytest.fixture(scope="module")
def tts(tmp_path_factory) -> StreamingTTS:
    root = tmp_path_factory.mktemp("ming") / "release"
    shutil.copytree(RELEASE, root)
    write_random_release("tiny", root / "talker")
    settings = SimpleNamespace(model=SimpleNamespace(path=str(root), device="cpu"))
    tts = StreamingTTS.build(settings, seed=0)
    # Random talker weights sample any of the 184,445 ids (mostly text tokens, which Ming's BPE decode
    # rejects as ours does), so the talker's sampled ids are replaced by valid audio tokens: 12 per word.
    talker = tts.talker

    def generate(text, voice, **_):
        rng = np.random.default_rng(len(text))
        yield from (talker.audio_offset + rng.integers(0, talker.bpe.vocab_size, 12 * len(text.split())))

    talker.generate = generate
    return tts


def test_release_folder_builds_ming_talker_and_detokenizer(tts):
    assert isinstance(tts.codec, MingDetokenizer) and not tts.random_weights
    assert tts.codec.sample_rate == OUTPUT_RATE == 24000


def test_streamed_speech_equals_offline_and_uses_the_voice(tts):
    text = "Hello there. This is the second sentence."
    offline = tts.synthesize(text, voice="eng")

    async def deltas():
        for word in text.split(" "):
            yield word + " "

    async def run():
        return [c async for c in tts.stream(deltas(), voice="eng")]

    chunks = asyncio.run(run())
    streamed = np.concatenate([c.pcm for c in chunks])
    assert offline.size > 0 and np.isfinite(offline).all()
    assert len(chunks) > 1  # streamed, not one block at the end
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    # the detokenizer conditions on the voice: another voice gives other audio for the same text
    luna = tts.synthesize(text, voice="luna")
    assert luna.shape != offline.shape or not np.allclose(luna, offline)
