"""Input audio work runs off the event loop (worker threads with one torch thread each), and appends are
limited by audio duration: a client's buffered burst is accepted, a sustained flood is not."""

import threading

import numpy as np

from omni_agent.realtime import audio_input
from omni_agent.realtime.audio_input import AudioRateLimit, audio_seconds
from omni_agent.realtime.testing import SR, FakeResponder, LiveServer, RealtimeClient, make_app, pcm16
from omni_agent.settings import Settings


async def test_a_30_s_burst_of_1500_appends_is_accepted_and_decoded_off_the_loop(monkeypatch):
    threads = set()
    orig = audio_input.InputAudio.process

    def spy(self, *args, **kwargs):
        import torch

        threads.add((threading.current_thread().name, torch.get_num_threads()))
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(audio_input.InputAudio, "process", spy)
    with LiveServer(make_app(Settings(), FakeResponder(steps=1))) as srv:
        c = await RealtimeClient.connect(srv.url)
        await c.wait_for("session.created")
        chunk = pcm16((0.05 * np.sin(np.arange(SR // 50) / 3)).astype(np.float32))  # 20 ms, server VAD on
        for _ in range(1500):  # 30 s of audio as fast as the socket takes it
            await c.append(chunk)
        await c.send({"type": "session.update", "event_id": "fence", "session": {"instructions": "x"}})
        await c.wait_for("session.updated", timeout=60)
        assert not [e for e in c.of("error") if e["error"]["code"] == "rate_limit_exceeded"]
        await c.close()
    assert threads and all(name.startswith("realtime-audio") and n == 1 for name, n in threads)


def test_audio_rate_limit_counts_seconds_not_events():
    lim = AudioRateLimit(rate=10.0, burst_s=60.0)
    assert all(lim.take(0.02) for _ in range(1500))  # 30 s at once: within the burst
    assert lim.take(29.0) and not lim.take(5.0)  # then the bucket is empty: a flood is refused
    assert abs(audio_seconds(64000, "pcm16") - 1.0) < 1e-9  # 48000 bytes of pcm16 = 1 s at 24 kHz


def test_outbound_queue_is_capped_in_bytes_and_freed_when_the_client_leaves():
    from omni_agent.realtime.routes import QueueOutbox

    q = QueueOutbox(max_bytes=1_000_000)
    big = "x" * 300_000  # e.g. a retrieved item with its audio
    for _ in range(3):
        q.put(big)
    assert q.bytes == 900_000 and not q.overflow.is_set()
    q.put(big)  # a fourth would pass the cap: the client is too slow, the session closes
    assert q.overflow.is_set() and q.bytes == 0 and not q.items
    q2 = QueueOutbox(max_bytes=1_000_000)
    q2.put(big)
    q2.close()  # the client left: its events are dropped now, later ones refused
    q2.put(big)
    assert q2.bytes == 0 and not q2.items
