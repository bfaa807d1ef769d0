"""``omni-agent serve``: flags feed the settings, and the app it builds answers on 127.0.0.1."""

from __future__ import annotations

import argparse

import httpx

from omni_agent.cli import common_parser, settings_from_args
from omni_agent.commands import serve


def test_serve_flags_feed_settings():
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers(), common_parser())
    args = parser.parse_args(["serve", "--host", "127.0.0.1", "--port", "0", "--api-key", "k"])
    settings = settings_from_args(args)
    assert (settings.server.host, settings.server.port, settings.server.api_key) == ("127.0.0.1", 0, "k")
    assert args.func is serve.run


def test_build_app_serves(tmp_path):
    from omni_agent.settings import Settings
    from tests.test_http_api import start_app

    settings = Settings.model_validate({"engine": {"kv_cache_mb": 4},
                                        "agent": {"checkpoint_db": str(tmp_path / "s.sqlite")}})
    server, thread, url = start_app(serve.build_app(settings))
    try:
        assert httpx.get(url + "/health").json()["status"] == "ok"
        assert httpx.get(url + "/v1/models").json()["data"][0]["id"] == "tiny"
        r = httpx.post(url + "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
        assert "omni_engine_queue_depth" in httpx.get(url + "/metrics").text
    finally:
        server.should_exit = True
        thread.join(10)
