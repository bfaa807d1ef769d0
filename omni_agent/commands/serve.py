"""``omni-agent serve``: the engine plus the OpenAI-compatible HTTP API (and mounted routers) on uvicorn."""

from __future__ import annotations

import argparse
import logging
import os

from omni_agent.cli import add_setting_flag
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
    p.set_defaults(func=run)


def build_app(settings: Settings):  # noqa: ANN201 - FastAPI, imported lazily
    """Engine + app with every router mounted. The one place other parts plug their routes in.

    Every response, realtime or HTTP, comes from the agent graph (``AgentResponder``). All parts are
    mounted unconditionally: a part that fails to import or build stops the server loudly.
    """
    from audio.tts import StreamingTTS
    from omni_agent.agent.artifacts import artifacts_router
    from omni_agent.agent.responder import AgentResponder
    from omni_agent.engine import AsyncEngine
    from omni_agent.realtime.routes import realtime_router
    from omni_agent.server import files
    from omni_agent.server.app import create_app

    if settings.realtime.journal_db is None:  # resumable realtime sessions live beside the agent's checkpoints
        from pathlib import Path

        settings.realtime.journal_db = str(Path(settings.agent.checkpoint_db).parent / "realtime-journal.sqlite")
    engine = AsyncEngine.from_settings(settings)
    tts = StreamingTTS.build(settings, seed=settings.model.seed)
    responder = AgentResponder.build(settings, engine, tts)  # the SQLite file opens on the first response
    extra_routers = [
        files.files_router(settings),
        realtime_router(settings, engine, tts, responder),
        artifacts_router(responder.artifacts),  # GET /v1/artifacts/{id}
    ]
    # create_app closes the responder (its session database) on shutdown
    return create_app(settings, engine, extra_routers=extra_routers, file_resolver=files.resolve_file,
                      responder=responder)


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
    import uvicorn

    app = build_app(settings)
    log.info("serving %s on http://%s:%d (%d torch thread(s) per compute thread)",
             settings.model.path or settings.model.preset, settings.server.host, settings.server.port, threads)
    uvicorn.run(app, host=settings.server.host, port=settings.server.port,
                log_level=settings.log_level,
                # headroom over the event limit, so an oversize event gets an error event, not a 1009 close
                ws_max_size=settings.realtime.max_event_bytes + 2**20)
    return 0
