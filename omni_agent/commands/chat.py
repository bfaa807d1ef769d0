"""``omni-agent chat``: talk to a realtime server from the terminal.

Microphone in and speaker out through ``sounddevice`` (PCM16 24 kHz mono), turn-taking by the
server's VAD, barge-in (speaking over the answer stops it; the client truncates the item at what it
actually played). ``--input-wav`` / ``--output-wav`` replace the microphone / add a recording, so the
client also runs on machines without audio hardware. Ctrl-C ends the call cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import sys
import time
from typing import Any

import numpy as np

from omni_agent.settings import Settings

SR = 24000  # the protocol's pcm16 rate
CHUNK_MS = 20  # microphone block: small enough for prompt VAD, large enough for little overhead
TAIL_SILENCE_S = 1.5  # silence sent after a WAV so the server VAD ends the turn (> silence_duration_ms)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("chat", parents=[common], help="voice chat with a realtime server (mic/speaker or WAV)",
                              description="Voice chat over the OpenAI Realtime protocol. Ctrl-C to quit.")
    p.add_argument("--url", default=None, help="realtime websocket URL (default ws://HOST:PORT/v1/realtime from settings)")
    p.add_argument("--api-key", default=None, help="API key (default: settings server.api_key, or OMNI_AGENT_API_KEY)")
    p.add_argument("--input-wav", metavar="FILE", help="speak this audio file instead of using the microphone")
    p.add_argument("--output-wav", metavar="FILE", help="also record the assistant's audio to this WAV file")
    p.add_argument("--no-speaker", action="store_true", help="do not play audio (implied without an audio device)")
    p.add_argument("--instructions", default=None, help="system instructions for the session")
    p.add_argument("--voice", default=None, help="voice name")
    p.add_argument("--language", default=None,
                   help="transcribe your speech with this language/dialect hint (e.g. en, Cantonese)")
    p.add_argument("--text", default=None, help="send this text as the user turn instead of audio")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="with --input-wav/--text: give up waiting for the answer after this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from omni_agent.preflight import check_input_file, check_output_file

    if args.input_wav:
        check_input_file(args.input_wav, "--input-wav")
    if args.output_wav:
        check_output_file(args.output_wav, "--output-wav")
    url = args.url or f"ws://{settings.server.host}:{settings.server.port}/v1/realtime"
    key = args.api_key or settings.server.api_key
    try:
        return asyncio.run(ChatClient(url, key, args).main())
    except KeyboardInterrupt:
        return 0


class ChatError(RuntimeError):
    """A reason the call cannot go on, worded for the user (one line)."""


class ChatClient:
    """The terminal client: one websocket, a sender (mic/WAV), a receiver, a player."""

    def __init__(self, url: str, api_key: str | None, args: argparse.Namespace) -> None:
        self.url, self.api_key, self.args = url, api_key, args
        self.stop = asyncio.Event()
        self.recorded: list[np.ndarray] = []
        self.play_buffer: list[np.ndarray] = []
        self.played_samples: dict[str, int] = {}  # item_id -> samples played (for truncation)
        self.playing_item: str | None = None
        self.ws: Any = None
        self.answered = asyncio.Event()
        self.speaker: Any = None
        self.error: str | None = None
        """What went wrong (no answer in time, a failed response); the exit code is then 1."""

    def out(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async def main(self) -> int:
        from websockets.asyncio.client import connect

        loop = asyncio.get_running_loop()
        # Windows, or not the main thread: Ctrl-C raises KeyboardInterrupt instead (run() handles it)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, self.stop.set)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            self.ws = await connect(self.url, additional_headers=headers, max_size=None, open_timeout=30)
        except Exception as e:
            self.out(f"omni-agent chat: cannot connect to {self.url}: {e}")
            return 1
        session: dict[str, Any] = {"type": "realtime", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": SR},
            "turn_detection": {"type": "server_vad", "create_response": True, "interrupt_response": True}},
            "output": {"format": {"type": "audio/pcm", "rate": SR}}}}
        if self.args.instructions:
            session["instructions"] = self.args.instructions
        if self.args.voice:
            session["audio"]["output"]["voice"] = self.args.voice
        if self.args.language:
            session["audio"]["input"]["transcription"] = {"model": "omni-asr", "language": self.args.language}
        await self.send({"type": "session.update", "session": session})
        self.open_speaker()
        receiver = asyncio.create_task(self.receive())
        sender = asyncio.create_task(self.send_input())
        stopped = asyncio.create_task(self.stop.wait())
        try:
            # Whichever ends first: Ctrl-C / the answer (stop), a failed sender (no microphone, an
            # unreadable file), or the server closing the connection. None of them may leave us waiting.
            await asyncio.wait({stopped, sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            self.error = self.error or self.failure(sender, receiver, stopped)
        finally:
            for t in (sender, receiver, stopped):
                t.cancel()
            for t in (sender, receiver):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await self.ws.close()
            if self.speaker is not None:
                self.speaker.stop()
                self.speaker.close()
            self.write_recording()
        if self.error:
            self.out(f"omni-agent chat: error: {self.error}")
            return 1
        return 0

    def failure(self, sender: asyncio.Task, receiver: asyncio.Task, stopped: asyncio.Task) -> str | None:
        """Why the call ended early, or None when it ended as asked (Ctrl-C, the answer came)."""
        if sender.done() and not sender.cancelled() and sender.exception() is not None:
            e = sender.exception()
            return str(e) if isinstance(e, ChatError) else f"sending input failed: {type(e).__name__}: {e}"
        if receiver.done() and not stopped.done():
            e = None if receiver.cancelled() else receiver.exception()
            return f"the server closed the connection{f' ({type(e).__name__}: {e})' if e else ''}"
        return None

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    # ---------------------------------------------------------------------------------------- input

    async def send_input(self) -> None:
        if self.args.text is not None:
            await self.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": self.args.text}]}})
            await self.send({"type": "response.create"})
            await self.wait_answer()
        elif self.args.input_wav:
            from audio.dsp import load_audio

            wave, _ = load_audio(self.args.input_wav, target_sr=SR)
            wave = np.concatenate([wave, np.zeros(int(TAIL_SILENCE_S * SR), np.float32)])
            n = SR * CHUNK_MS // 1000
            t0 = time.perf_counter()
            for k, i in enumerate(range(0, len(wave), n)):
                await self.append(wave[i:i + n])
                # paced like a microphone, so barge-in and VAD timing behave as in a call
                await asyncio.sleep(max(0.0, t0 + (k + 1) * CHUNK_MS / 1000 - time.perf_counter()))
            await self.wait_answer()
        else:
            await self.mic_loop()

    async def wait_answer(self) -> None:
        try:
            async with asyncio.timeout(self.args.timeout):
                await self.answered.wait()
                # let the speaker finish what it holds (polled: the audio callback runs in another thread)
                while self.play_buffer:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            if not self.answered.is_set():
                self.error = f"no answer from {self.url} within {self.args.timeout:g} s (--timeout)"
        self.stop.set()

    async def append(self, wave: np.ndarray) -> None:
        pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
        await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})

    def open_microphone(self, callback: Any) -> Any:
        """The input stream, or :class:`ChatError` saying there is no microphone and what to use instead."""
        try:
            import sounddevice as sd

            return sd.InputStream(samplerate=SR, channels=1, dtype="float32", blocksize=SR * CHUNK_MS // 1000,
                                  callback=callback)
        except Exception as e:  # PortAudio missing, no input device, device busy
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ChatError(f"no microphone ({first}); use --input-wav FILE or --text TEXT") from None

    async def mic_loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[np.ndarray] = asyncio.Queue()

        def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, indata[:, 0].copy())

        with self.open_microphone(callback):
            self.out("listening (Ctrl-C to quit)...")
            while True:
                await self.append(await queue.get())

    # ---------------------------------------------------------------------------------------- output

    def open_speaker(self) -> None:
        if self.args.no_speaker or self.args.input_wav and self.args.output_wav:
            return
        try:
            import sounddevice as sd

            def callback(outdata: np.ndarray, frames: int, t: Any, status: Any) -> None:
                out = np.zeros(frames, np.float32)
                filled = 0
                while filled < frames and self.play_buffer:
                    chunk = self.play_buffer[0]
                    take = min(frames - filled, len(chunk))
                    out[filled:filled + take] = chunk[:take]
                    filled += take
                    if take == len(chunk):
                        self.play_buffer.pop(0)
                    else:
                        self.play_buffer[0] = chunk[take:]
                if self.playing_item is not None:
                    self.played_samples[self.playing_item] = self.played_samples.get(self.playing_item, 0) + filled
                outdata[:, 0] = out

            self.speaker = sd.OutputStream(samplerate=SR, channels=1, dtype="float32", callback=callback)
            self.speaker.start()
        except Exception as e:  # no audio device: keep going without sound
            self.out(f"(no speaker: {e})")
            self.speaker = None

    def write_recording(self) -> None:
        if not self.args.output_wav:
            return
        import soundfile as sf

        audio = np.concatenate(self.recorded) if self.recorded else np.zeros(0, np.float32)
        sf.write(self.args.output_wav, audio, SR, subtype="PCM_16")
        self.out(f"wrote {len(audio) / SR:.1f} s of assistant audio to {self.args.output_wav}")

    async def receive(self) -> None:
        async for raw in self.ws:
            ev = json.loads(raw)
            t = ev.get("type", "")
            if t in ("response.output_audio.delta", "response.audio.delta"):
                pcm = np.frombuffer(base64.b64decode(ev["delta"]), "<i2").astype(np.float32) / 32768
                self.recorded.append(pcm)
                if self.speaker is not None:
                    self.playing_item = ev["item_id"]
                    self.play_buffer.append(pcm)
            elif t in ("response.output_audio_transcript.delta", "response.audio_transcript.delta",
                       "response.output_text.delta", "response.text.delta"):
                print(ev["delta"], end="", flush=True)
            elif t == "input_audio_buffer.speech_started":
                await self.barge_in()
                self.out("\n[you are speaking]")
            elif t == "conversation.item.input_audio_transcription.completed":
                self.out(f"[you] {ev['transcript']}")
            elif t == "response.done":
                print(flush=True)
                status = ev["response"]["status"]
                lat = ev["response"].get("latency", {})
                if status != "completed" or lat:
                    self.out(f"[{status}] " + " ".join(f"{k}={v:.0f}" for k, v in lat.items()))
                if status == "failed":
                    details = ev["response"].get("status_details") or {}
                    self.error = f"the response failed: {(details.get('error') or {}).get('message') or details}"
                self.answered.set()
            elif t == "error":
                self.out(f"[error] {ev['error'].get('code')}: {ev['error'].get('message')}")

    async def barge_in(self) -> None:
        """The user talks over the answer: stop playing and tell the server what was heard."""
        if self.speaker is None or not self.play_buffer or self.playing_item is None:
            return
        self.play_buffer.clear()
        played_ms = self.played_samples.get(self.playing_item, 0) * 1000 // SR
        await self.send({"type": "conversation.item.truncate", "item_id": self.playing_item, "content_index": 0,
                         "audio_end_ms": played_ms})
