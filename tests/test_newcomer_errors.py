"""The mistakes a newcomer makes cost one readable line and a non-zero exit, before any model is built.

Each case runs the real command line (``omni_agent.cli.main``) with every model builder replaced by
one that fails the test, so "checked before the model is built" is asserted, not assumed.
"""

from __future__ import annotations

import socket
import wave

import pytest
import torch

from omni_agent import preflight
from omni_agent.cli import main


@pytest.fixture
def no_model_build(monkeypatch):
    """Fail the test if any command starts building a model."""
    import audio.tts
    import generation.stack
    import omni_agent.engine
    import omni_agent.model.thinker

    def built(*args, **kwargs):
        raise AssertionError("a model was built before the error was found")

    monkeypatch.setattr(omni_agent.engine.AsyncEngine, "from_settings", classmethod(built))
    monkeypatch.setattr(omni_agent.model.thinker.Thinker, "from_preset", classmethod(built))
    monkeypatch.setattr(omni_agent.model.thinker.Thinker, "from_pretrained", classmethod(built))
    monkeypatch.setattr(audio.tts.StreamingTTS, "build", classmethod(built))
    monkeypatch.setattr(generation.stack.ImageStack, "build", classmethod(built))


def one_line_error(capsys, argv: list[str], code: int = 2) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, err
    assert len(err) == 1, err
    assert err[0].startswith("omni-agent: error: ")
    return err[0].removeprefix("omni-agent: error: ")


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not decoded: the model check comes first")
    return path


MISSING = "/nonexistent/ming-checkpoint"


@pytest.mark.parametrize("argv", [
    ["serve", "--model-path", MISSING],
    ["tts", "hello", "-o", "{tmp}/out.wav", "--model-path", MISSING],
    ["image", "generate", "a cube", "-o", "{tmp}/out.png", "--model-path", MISSING],
    ["video", "ask", "{clip}", "what?", "--model-path", MISSING],
    ["run", "hello", "--model-path", MISSING],
])
def test_bad_model_path(no_model_build, capsys, tmp_path, clip, argv):
    argv = [a.format(tmp=tmp_path, clip=clip) for a in argv]
    assert one_line_error(capsys, argv) == f"--model-path {MISSING} does not exist"


def test_model_path_without_the_part_the_command_needs(no_model_build, capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert one_line_error(capsys, ["serve", "--model-path", str(ckpt)]) == (
        f"--model-path {ckpt} has no config.json (the thinker of Ming's checkpoint layout); "
        "refusing to fall back to random weights")
    (ckpt / "config.json").write_text("{}")
    # tts never falls back to the random tiny talker when a checkpoint without talker/ is given
    assert one_line_error(capsys, ["tts", "hi", "-o", str(tmp_path / "a.wav"), "--model-path", str(ckpt)]) == (
        f"--model-path {ckpt} has no talker (the talker of Ming's checkpoint layout); "
        "refusing to fall back to random weights")
    file = tmp_path / "weights.safetensors"
    file.write_bytes(b"")
    assert one_line_error(capsys, ["image", "generate", "x", "-o", str(tmp_path / "o.png"), "--model-path",
                                   str(file)]) == f"--model-path {file} is not a folder (expected Ming's checkpoint layout)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv, flag", [
    (["serve", "--device", "cuda"], "--device"),
    (["tts", "hi", "-o", "{tmp}/a.wav", "--device", "cuda"], "--device"),
    (["run", "hello", "--torch-device", "cuda"], "--torch-device"),
])
def test_cuda_without_cuda(no_model_build, capsys, tmp_path, argv, flag):
    why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert one_line_error(capsys, argv) == f"{flag} cuda: CUDA is not available ({why}); use {flag} cpu"


def test_not_a_device(no_model_build, capsys):
    assert one_line_error(capsys, ["serve", "--device", "gpu0"]) == (
        "--device 'gpu0' is not a torch device (try cpu, cuda or cuda:0)")


@pytest.mark.parametrize("argv, flag, name", [
    (["tts", "hello", "-o", "{tmp}/no/such/dir/out.wav"], "-o", "out.wav"),
    (["image", "generate", "a cube", "-o", "{tmp}/no/such/dir/out.png"], "-o", "out.png"),
    (["run", "draw a cat", "--out", "{tmp}/no/such/dir/out.png"], "--out", "out.png"),
    (["chat", "--text", "hi", "--output-wav", "{tmp}/no/such/dir/out.wav"], "--output-wav", "out.wav"),
])
def test_output_in_a_missing_folder(no_model_build, capsys, tmp_path, argv, flag, name):
    argv = [a.format(tmp=tmp_path) for a in argv]
    folder = tmp_path / "no" / "such" / "dir"
    assert one_line_error(capsys, argv) == f"{flag} {folder / name}: folder {folder} does not exist (create it first)"


def test_unknown_task(no_model_build, capsys):
    line = one_line_error(capsys, ["run", "--task", "order_pizza", "--oracle"])
    assert line.startswith("unknown task 'order_pizza' (known: ")
    assert "send_hello_alice" in line and line.endswith("`omni-agent android tasks` lists them)")


def test_no_phone_reachable(no_model_build, capsys):
    from tools.android.testing import adb_server

    with adb_server() as port:  # a private adb server with no devices
        line = one_line_error(capsys, ["run", "Turn on Wi-Fi", "--device", "emulator-5554", "--adb-port", str(port)])
        do = one_line_error(capsys, ["android", "--adb-port", str(port), "do", "home", "--device", "emulator-5554"])
    assert line == do == ("no phone reachable at emulator-5554: adb does not list it (start one with "
                          "`omni-agent android sim --connect`, or check `adb devices`)")


def test_port_in_use(no_model_build, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(capsys, ["serve", "--port", str(port)])
    assert line == (f"cannot listen on 127.0.0.1:{port}: Address already in use "
                    "(another server is running there? pick one with --port, or --port 0)")


def test_missing_input_wav(capsys, tmp_path):
    missing = tmp_path / "question.wav"
    assert one_line_error(capsys, ["chat", "--input-wav", str(missing), "--no-speaker"]) == (
        f"--input-wav {missing} does not exist")


def test_missing_image_for_edit(no_model_build, capsys, tmp_path):
    missing = tmp_path / "in.png"
    assert one_line_error(capsys, ["image", "edit", str(missing), "make it blue", "-o", str(tmp_path / "o.png")]) == (
        f"image {missing} does not exist")


def test_zero_steps(no_model_build, capsys, tmp_path):
    assert one_line_error(capsys, ["image", "generate", "a cube", "-o", str(tmp_path / "o.png"), "--steps", "0"]) == (
        "--steps must be at least 1 (got 0)")
    assert one_line_error(capsys, ["run", "draw a cat", "--image-steps", "0"]) == "--image-steps must be at least 1 (got 0)"


def test_missing_backend_pipeline(no_model_build, capsys, tmp_path):
    out = str(tmp_path / "o.png")
    assert one_line_error(capsys, ["image", "generate", "a cat", "-o", out, "--backend", "OvisImagePipeline"]) == (
        "--backend needs --backend-path (a local diffusers pipeline folder)")
    missing = tmp_path / "Ovis-Image-7B"
    assert one_line_error(capsys, ["image", "generate", "a cat", "-o", out, "--backend", "OvisImagePipeline",
                                   "--backend-path", str(missing)]) == (
        f"--backend-path {missing} is not a folder (a local diffusers pipeline)")


# ------------------------------------------------------------------------------------------------
# chat never hangs: each way a call can go wrong prints what happened and exits 1


@pytest.fixture
def realtime_server():
    from omni_agent.realtime.testing import FakeResponder, LiveServer, make_app
    from omni_agent.settings import load_settings

    def start(responder=None):
        return LiveServer(make_app(load_settings(env={}), responder or FakeResponder()))

    return start


def chat_error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1, err
    assert err[-1].startswith("omni-agent chat: error: "), err
    return err[-1].removeprefix("omni-agent chat: error: ")


def test_chat_without_a_microphone(capsys, monkeypatch, realtime_server):
    import sounddevice

    def no_device(*args, **kwargs):
        raise sounddevice.PortAudioError("Error querying device -1")

    monkeypatch.setattr(sounddevice, "InputStream", no_device)
    with realtime_server() as server:
        line = chat_error(capsys, ["chat", "--url", server.url, "--no-speaker"])
    assert line == "no microphone (Error querying device -1); use --input-wav FILE or --text TEXT"


def test_chat_when_the_sender_fails(capsys, tmp_path, realtime_server):
    bad = tmp_path / "question.wav"
    bad.write_bytes(b"RIFF but not really a wav file")
    with realtime_server() as server:
        line = chat_error(capsys, ["chat", "--url", server.url, "--input-wav", str(bad), "--no-speaker"])
    assert line.startswith("sending input failed: ")


def test_chat_timeout(capsys, realtime_server):
    from omni_agent.realtime.testing import FakeResponder

    with realtime_server(FakeResponder(first_delay_s=30)) as server:
        line = chat_error(capsys, ["chat", "--url", server.url, "--text", "hi", "--no-speaker", "--timeout", "0.5"])
    assert line == f"no answer from {server.url} within 0.5 s (--timeout)"


def test_chat_answer_exits_zero(capsys, tmp_path, realtime_server):
    out = tmp_path / "answer.wav"
    with realtime_server() as server:
        rc = main(["chat", "--url", server.url, "--text", "hi", "--no-speaker", "--output-wav", str(out)])
    assert rc == 0, capsys.readouterr().err
    with wave.open(str(out)) as w:
        assert w.getnframes() > 0


# ------------------------------------------------------------------------------------------------
# random weights are announced once per process


def test_random_weights_notice_once(monkeypatch, capsys):
    from omni_agent.settings import load_settings

    monkeypatch.setattr(preflight, "_told_random", False)
    s = load_settings(env={})
    assert preflight.random_weights_notice(s, "serve") is True
    assert preflight.random_weights_notice(s, "run") is False
    err = capsys.readouterr().err
    assert err.count("weights are RANDOM") == 1 and "'tiny' preset" in err
    s_ckpt = load_settings(env={}, flags={"model.path": "/models/x"})
    monkeypatch.setattr(preflight, "_told_random", False)
    assert preflight.random_weights_notice(s_ckpt, "serve") is False
