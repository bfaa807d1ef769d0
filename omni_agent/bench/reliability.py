"""``omni-agent bench reliability``: bad inputs against a live server while healthy requests run.

A server (the tiny engine unless settings say otherwise, the agent graph, files, artifacts, two
principals, a 2 MiB body limit) runs on 127.0.0.1 in this process, with a websocket device bridge
and a simulated phone beside it. Healthy streaming completions run the whole time from their own
loopback address (127.0.0.2, so the failed-auth throttle that the probes trip from 127.0.0.1 never
touches them). Every probe of :mod:`omni_agent.bench.faults` is sent, then a seeded random fuzz of
chat bodies, then the bridge attacks; afterwards a server subprocess is killed with SIGKILL
mid-session and restarted on the same database.

Keys (a contract): ``bad_inputs_tried``, ``clear_errors`` (a 4xx in OpenAI's error format, or an
error frame and close code on the bridge), ``crashes`` (5xx, dropped connections, a dead server),
``hangs`` (no answer within 60 s), ``collateral_failures`` (healthy requests that failed),
``healthy_requests``, ``rss_growth_mb`` (this process, across the probes, after warm-up),
``resume_ok`` (the session's history is there after kill -9 and restart), ``unclear`` (names of
probes answered without a clear error).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from omni_agent.bench import BenchContext, benchmark

PROBE_KEY, OTHER_KEY = "sk-bench-prober", "sk-bench-other"  # the attacker's own key; the victim's
BODY_LIMIT = 2 * 2**20
HEALTHY_STREAMS = 4
PROBE_TIMEOUT_S = 60.0  # longer than any refusal may take: past this, a probe counts as a hang


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class HealthyLoad:
    """``n`` threads streaming short completions back to back until :meth:`stop`; counts failures."""

    def __init__(self, url: str, key: str, n: int = HEALTHY_STREAMS):
        import httpx

        self.ok = self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        transport = httpx.HTTPTransport(local_address="127.0.0.2")  # not the prober's address
        self._client = httpx.Client(base_url=url, transport=transport, timeout=PROBE_TIMEOUT_S,
                                    headers={"Authorization": f"Bearer {key}"})
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def __enter__(self) -> HealthyLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(PROBE_TIMEOUT_S * 2)
        self._client.close()

    def _run(self, i: int) -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": f"count to ten, stream {i}"}],
                "max_tokens": 16, "temperature": 0, "stream": True}
        while not self._stop.is_set():
            try:
                with self._client.stream("POST", "/v1/chat/completions", json=body) as r:
                    text = "".join(r.iter_text())
                good = r.status_code == 200 and text.rstrip().endswith("[DONE]") and '"error"' not in text
            except Exception as e:  # noqa: BLE001 - any failure of a healthy request is collateral damage
                good, text = False, repr(e)
            if good:
                self.ok += 1
            else:
                self.failed += 1
                self.errors.append(text[:200])


@contextlib.contextmanager
def _live_server(ctx: BenchContext):
    """The app with every router, on a free 127.0.0.1 port in a background thread."""
    import uvicorn

    from omni_agent.agent.artifacts import artifacts_router
    from omni_agent.engine import AsyncEngine
    from omni_agent.server.app import create_app
    from omni_agent.server.files import FileStore, files_router

    tmp = tempfile.mkdtemp(prefix="omni-reliability-")
    settings = ctx.settings.model_copy(deep=True)
    settings.server.api_keys = {"prober": PROBE_KEY, "other": OTHER_KEY}
    settings.server.max_request_bytes = BODY_LIMIT
    settings.engine.kv_cache_mb = min(settings.engine.kv_cache_mb, 64)
    settings.agent.checkpoint_db = str(Path(tmp) / "sessions.sqlite")
    engine = AsyncEngine.from_settings(settings)
    store = FileStore()
    app = create_app(settings, engine, extra_routers=[files_router(settings, store=store)],
                     file_resolver=lambda fid: store.get(fid).data)
    app.include_router(artifacts_router(app.state.responder.artifacts, settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app, store
    finally:
        server.should_exit = True
        thread.join(30)


def _victims(app: Any, store: Any) -> dict[str, str]:
    """An artifact and a file owned by the other principal (what the probes must not reach)."""
    from omni_agent.principal import acting_as

    with acting_as("other"):
        art = app.state.responder.artifacts.put(b"someone's recorded voice", "audio/wav", kind="input_audio")
        f = store.add(b"someone's notes", "notes.txt", "user_data")
    return {"artifact": art.id, "file": f.id}


def _bridge_round() -> tuple[int, dict[str, int], list[str]]:
    """Bridge attacks with a simulated phone connected; the phone must keep answering."""
    from omni_agent.bench.faults import CLEAR, bridge_probes
    from tools.android.bridge import DeviceBridge
    from tools.android.sim import SimulatedDevice

    counts = {"clear": 0, "crash": 0, "hang": 0, "unclear": 0, "collateral": 0}
    unclear: list[str] = []
    bridge = DeviceBridge("bench-token").start()
    sim = SimulatedDevice()
    sim.join_bridge(bridge.url, "bench-token", name="phone")
    try:
        bridge.wait_for_device("phone")
        probes = bridge_probes(bridge.url, "bench-token")
        for name, run in probes:
            try:
                outcome = run()
            except Exception:  # noqa: BLE001 - a probe that blew up on the client side means no clear answer
                outcome = "crash"
            counts[outcome] += 1
            if outcome != CLEAR:
                unclear.append(name)
            try:
                bridge.call("phone", "state", timeout=5)
            except Exception:  # noqa: BLE001
                counts["collateral"] += 1
    finally:
        sim.stop()
        bridge.stop()
    return len(probes), counts, unclear


def _kill9_resume(ctx: BenchContext) -> bool:
    """Serve in a subprocess, talk in a session, SIGKILL it, restart: is the session's history there?"""
    import httpx

    from tools.android.testing import free_port

    tmp = tempfile.mkdtemp(prefix="omni-resume-")
    port = free_port()
    env = {**os.environ, "OMNI_AGENT_AGENT__CHECKPOINT_DB": str(Path(tmp) / "sessions.sqlite"),
           "OMNI_AGENT_ENGINE__KV_CACHE_MB": "32", "OMNI_AGENT_MODEL__PRESET": ctx.settings.model.preset}
    cmd = [sys.executable, "-m", "omni_agent", "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    body = {"model": "tiny", "max_tokens": 3, "temperature": 0}

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    return proc
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        proc.kill()
        raise RuntimeError("the server subprocess did not become healthy")

    proc = start()
    try:
        first = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            **body, "user": "resume", "messages": [{"role": "user", "content": "Remember the number 42."}]})
        ok = first.status_code == 200
        time.sleep(0.5)  # the turn's checkpoint is written when the graph exits
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    proc = start()
    try:
        question = [{"role": "user", "content": "Which number?"}]
        again = httpx.post(url + "/v1/chat/completions", timeout=60, json={**body, "user": "resume",
                                                                           "messages": question})
        alone = httpx.post(url + "/v1/chat/completions", timeout=60, json={**body, "messages": question})
        healthy = httpx.get(url + "/health", timeout=10).json().get("status") == "ok"
        return (ok and healthy and again.status_code == 200 and alone.status_code == 200
                and again.json()["usage"]["prompt_tokens"] > alone.json()["usage"]["prompt_tokens"])
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)


def run_reliability(ctx: BenchContext) -> dict[str, Any]:
    import httpx

    from omni_agent.bench.faults import CLEAR, fuzz_probes, http_probes, judge, judge_fuzz

    rounds = 1 if ctx.quick else int(ctx.options.get("rounds", 3))
    fuzz = int(ctx.options.get("fuzz", 20 if ctx.quick else 200))
    counts = {"clear": 0, "crash": 0, "hang": 0, "unclear": 0}
    unclear: list[str] = []
    with _live_server(ctx) as (url, app, store):
        client = httpx.Client(base_url=url, timeout=PROBE_TIMEOUT_S)
        probes = http_probes(url, PROBE_KEY, _victims(app, store), BODY_LIMIT)
        with HealthyLoad(url, OTHER_KEY) as warm:  # warm-up: first requests allocate what later ones reuse
            time.sleep(2.0)
        gc.collect()
        rss0 = _rss_mb()
        with HealthyLoad(url, OTHER_KEY) as load:
            for _ in range(rounds):
                for probe in probes:
                    outcome = judge(probe, client)
                    counts[outcome] += 1
                    if outcome != CLEAR:
                        unclear.append(probe.name)
            for probe in fuzz_probes(fuzz, PROBE_KEY):
                outcome = judge_fuzz(probe, client)
                counts[outcome] += 1
                if outcome != CLEAR:
                    unclear.append(probe.name)
            time.sleep(1.0)  # let the healthy streams in flight finish next to the last probes
        client.close()
        gc.collect()
        rss_growth = _rss_mb() - rss0
        try:
            alive = httpx.get(url + "/health", timeout=10).status_code == 200
        except httpx.TransportError:
            alive = False
    n_bridge, bridge, bridge_unclear = _bridge_round()
    tried = rounds * len(probes) + fuzz + n_bridge
    result: dict[str, Any] = {
        "bad_inputs_tried": tried,
        "clear_errors": counts["clear"] + bridge["clear"],
        "crashes": counts["crash"] + bridge["crash"] + (0 if alive else 1),
        "hangs": counts["hang"] + bridge["hang"],
        "collateral_failures": load.failed + bridge["collateral"],
        "healthy_requests": load.ok + load.failed + warm.ok,
        "rss_growth_mb": round(rss_growth, 1),
        "resume_ok": _kill9_resume(ctx),
        "unclear": ",".join(sorted(set(unclear + bridge_unclear))),
    }
    if load.errors:
        result["collateral_example"] = load.errors[0]
    return result


@benchmark("reliability", help="bad inputs, fuzz and bridge attacks beside healthy streams; kill -9 resume")
def bench_reliability(ctx: BenchContext) -> dict[str, Any]:
    return run_reliability(ctx)
