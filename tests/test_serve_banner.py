"""``omni-agent serve`` says where it listens and what it serves; ``bench`` says what it is doing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from omni_agent.cli import main


def test_serve_prints_the_banner(tmp_path):
    env = {**os.environ, "OMNI_AGENT_AGENT__CHECKPOINT_DB": str(tmp_path / "s.sqlite"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "omni_agent", "serve", "--port", "0", "--api-key", "k"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any(line.startswith("  weights are RANDOM") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else lines
            lines.append(proc.stdout.readline().rstrip("\n"))
        banner = "\n".join(lines)
        assert lines[0] == "omni-agent 0.1.0 serving model 'tiny'"
        http = next(line.split()[1] for line in lines if line.startswith("  HTTP"))
        port = int(http.rsplit(":", 1)[1].split("/")[0])
        assert port > 0  # --port 0: the banner shows the port actually bound
        assert f"  realtime   ws://127.0.0.1:{port}/v1/realtime" in banner
        assert "  model      'tiny' preset (random weights, seed 0)" in banner
        assert "  device     cpu, float32" in banner and "Bearer <api key> required" in banner
        for _ in range(100):  # the banner comes as the socket is bound; the app starts right after
            try:
                r = httpx.get(f"{http}/models", headers={"Authorization": "Bearer k"})
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert r.json()["data"][0]["id"] == "tiny"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    err = proc.stderr.read()
    assert err.count("weights are RANDOM") == 1 and "building the model and the server ..." in err


def test_bench_shows_progress(capsys):
    assert main(["bench", "engine", "--quick", "--json"]) == 0
    err = capsys.readouterr().err
    for phase in ("started", "building the thinker and the engine", "decode throughput at concurrency 16",
                  "image TTFT", "done"):
        assert f"] {phase}" in err, err
