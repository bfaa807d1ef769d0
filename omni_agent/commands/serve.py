"""``omni-agent serve``: the engine plus the OpenAI-compatible HTTP API (and mounted routers) on uvicorn."""

from __future__ import annotations

import argparse
import logging
import os

from omni_agent.cli import add_setting_flag
from omni_agent.preflight import PreflightError, model_label, random_weights_notice
from omni_agent.settings import Settings

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("serve", parents=[common], help="serve the model over HTTP (OpenAI API) and websockets",
                              description="Start the engine and the OpenAI-compatible server.")
    add_setting_flag(p, "--host", "server.host", metavar="HOST", help="interface to bind (default 127.0.0.1)")
    add_setting_flag(p, "--port", "server.port", type=int, metavar="PORT", help="TCP port (default 8000; 0 picks a free one)")
    add_setting_flag(p, "--threads", "server.threads", type=int, metavar="N",
                     help="torch threads per compute thread (default: half the cores)")
    add_setting_flag(p, "--api-key", "server.api_key", metavar="KEY",
                     help="require Authorization: Bearer KEY on every request")
    add_setting_flag(p, "--engine", "engine.backend", choices=["embedded", "vllm"],
                     help="run the thinker in-process (default) or in vLLM with the Ming plugin (make vllm)")
    add_setting_flag(p, "--vllm-url", "engine.vllm_url", metavar="URL",
                     help="with --engine vllm: connect to this running omni_agent_vllm.serve instead of starting one")
    p.set_defaults(func=run)


def build_app(settings: Settings):  # noqa: ANN201 - FastAPI, imported lazily
    """Engine + app with every router mounted. The one place other parts plug their routes in.

    Every response, realtime or HTTP, comes from the agent graph (``AgentResponder``). All parts are
    mounted unconditionally: a part that fails to import or build stops the server loudly.
    """
    from audio.tts import StreamingTTS
    from omni_agent.agent.artifacts import artifacts_router
    from omni_agent.agent.responder import AgentResponder
    from omni_agent.engine.backends import engine_from_settings
    from omni_agent.realtime.routes import realtime_router
    from omni_agent.server import files
    from omni_agent.server.app import create_app
    from omni_agent.server.speech import speech_router
    from web import web_router

    if settings.realtime.journal_db is None:  # resumable realtime sessions live beside the agent's checkpoints
        from pathlib import Path

        settings.realtime.journal_db = str(Path(settings.agent.checkpoint_db).parent / "realtime-journal.sqlite")
    engine = engine_from_settings(settings)
    tts = StreamingTTS.build(settings, seed=settings.model.seed)
    responder = AgentResponder.build(settings, engine, tts)  # the SQLite file opens at start-up (lifespan)
    extra_routers = [
        files.files_router(settings),
        realtime_router(settings, engine, tts, responder),
        artifacts_router(responder.artifacts, settings),  # GET /v1/artifacts/{id}, owner only
        speech_router(settings, tts),  # POST /v1/audio/speech
        web_router(),  # GET / : the browser client
    ]
    # create_app closes the responder (its session database) on shutdown
    app = create_app(settings, engine, extra_routers=extra_routers, file_resolver=files.resolve_file,
                     responder=responder)
    app.state.tts = tts  # the chat route speaks through it (audio output), the banner names its weights
    return app


def banner(settings: Settings, host: str, port: int, *, talker_random: bool | None = None) -> str:
    """What ``serve`` prints once it listens (like ``vllm serve`` / ``ollama serve``): where, what, how."""
    from omni_agent import __version__
    from omni_agent.server.app import model_id

    m = settings.model
    shown = f"[{host}]" if ":" in host else host
    lines = [f"omni-agent {__version__} serving model '{model_id(settings)}'",
             f"  model      {model_label(settings)}",
             f"  device     {m.device}, {m.dtype}",
             f"  HTTP       http://{shown}:{port}/v1  (chat/completions, audio/speech, images, models, files; /health, /metrics)",
             f"  realtime   ws://{shown}:{port}/v1/realtime",
             f"  auth       {_auth_line(settings)}",
             f"  web page   http://{shown}:{port}/"]
    if talker_random is not None:
        lines.append(f"  talker     {'RANDOM weights (speech is babble)' if talker_random else 'from the checkpoint'}")
    if not m.path:
        lines.append("  weights are RANDOM: the runtime's paths are real, its answers are gibberish by design")
    return "\n".join(lines)


def _auth_line(settings: Settings) -> str:
    n = len({*settings.server.api_keys, *(["default"] if settings.server.api_key else [])})
    if not n:
        return "none (every client is the one local principal; --api-key or server.api_keys to require keys)"
    return f"Authorization: Bearer <api key> required ({n} principal{'s' if n > 1 else ''})"


def set_thread_counts(settings: Settings) -> int:
    """Thread counts for the server's own work, set before torch is imported (OpenMP reads them once).

    Returns the intra-op thread count in effect.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        n = settings.server.threads or max(1, (os.cpu_count() or 2) // 2)
        os.environ["OMP_NUM_THREADS"] = str(n)
        os.environ.setdefault("MKL_NUM_THREADS", str(n))
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
    return int(os.environ["OMP_NUM_THREADS"])


def run(args: argparse.Namespace, settings: Settings) -> int:
    threads = set_thread_counts(settings)  # before anything imports torch
    import socket
    import sys

    import uvicorn

    from omni_agent.engine.vllm_server import VllmEnvMissing, VllmStartError
    from omni_agent.preflight import building, check_model, check_port_free

    s = settings.server
    check_model(settings, "thinker")
    check_port_free(s.host, s.port)  # before the model is built: a busy port costs one line, not a build
    random_weights_notice(settings, "serve")
    try:
        with building("the model and the server"):
            app = build_app(settings)
    except (VllmEnvMissing, VllmStartError) as e:  # --engine vllm without a usable vLLM: say so, no traceback
        print(f"omni-agent: error: {e}", file=sys.stderr)
        return 2
    # Bind now, so that the banner shows the real port (--port 0) and nobody takes it meanwhile.
    sock = socket.socket(socket.AF_INET6 if ":" in s.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((s.host, s.port))
    except OSError as e:
        sock.close()
        raise PreflightError(f"cannot listen on {s.host}:{s.port}: {e.strerror or e}") from None
    port = sock.getsockname()[1]
    tts = getattr(app.state, "tts", None)
    print(banner(settings, s.host, port, talker_random=getattr(tts, "random_weights", None)), flush=True)
    log.info("%d torch thread(s) per compute thread", threads)
    config = uvicorn.Config(app, log_level=settings.log_level,
                            # headroom over the event limit, so an oversize event gets an error event, not a 1009 close
                            ws_max_size=settings.realtime.max_event_bytes + 2**20)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
