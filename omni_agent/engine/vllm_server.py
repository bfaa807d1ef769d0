"""Running the vLLM side from the runtime: find the vLLM environment, start/stop its server, run one-shot
greedy jobs (tests and ``bench engine --engine vllm``).

The environment is ``.venv-vllm`` at the repository root (``make vllm``) or the Python named by
``OMNI_VLLM_PYTHON``. The server is ``python -m omni_agent_vllm.serve`` (vLLM's ``AsyncLLM`` with
the plugin); it gets the CPU settings of issue 17 unless the caller's environment sets them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CPU_ENV = {  # one process, 1 GiB KV cache: what a 2-core CI machine can run (issue 17's measurements)
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
}


class VllmEnvMissing(RuntimeError):
    """No vLLM environment: the message says how to build one."""


class VllmStartError(RuntimeError):
    """The vLLM server exited or did not answer in time; the message ends with its log tail."""


def vllm_python() -> str:
    """The vLLM environment's Python.

    Raises:
        VllmEnvMissing: neither ``OMNI_VLLM_PYTHON`` nor ``.venv-vllm/bin/python`` exists.
    """
    explicit = os.environ.get("OMNI_VLLM_PYTHON")
    path = Path(explicit) if explicit else REPO / ".venv-vllm" / "bin" / "python"
    if not path.exists():
        raise VllmEnvMissing(f"no vLLM environment at {path}: run `make vllm` (scripts/setup_vllm.sh) or set "
                             "OMNI_VLLM_PYTHON to a Python with vllm and omni-agent-vllm installed")
    return str(path)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**CPU_ENV, **os.environ, **(extra or {})}
    env.pop("PYTHONPATH", None)  # the project's tree must not shadow the vLLM environment's packages
    return env


def run_greedy(spec: dict[str, Any], *, timeout_s: float = 300.0) -> dict[str, Any]:
    """Run ``omni_agent_vllm.greedy`` on ``spec`` in the vLLM environment and return its result.

    Raises:
        VllmEnvMissing: no vLLM environment.
        RuntimeError: the job failed (the message ends with its stderr).
    """
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(spec))
        proc = subprocess.run([vllm_python(), "-m", "omni_agent_vllm.greedy", str(src), str(dst)], env=_env(),
                              capture_output=True, text=True, timeout=timeout_s, cwd=tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"vLLM greedy job failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(dst.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmServer:
    """A ``omni_agent_vllm.serve`` subprocess on 127.0.0.1 (``start`` waits until it answers)."""

    def __init__(self, model_path: str, *, port: int | None = None, max_model_len: int = 8192,
                 extra_args: list[str] | None = None, log_path: str | None = None) -> None:
        self.model_path, self.port = model_path, port or free_port()
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args or [])
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> str:
        """Launch the server and wait for ``/health``; returns its URL.

        Raises:
            VllmEnvMissing: no vLLM environment.
            VllmStartError: the server exited or did not answer within ``timeout_s`` (its log tail included).
        """
        import httpx

        cmd = [vllm_python(), "-m", "omni_agent_vllm.serve", "--model", self.model_path, "--host", "127.0.0.1",
               "--port", str(self.port), "--max-model-len", str(self.max_model_len), *self.extra_args]
        self._log = open(self.log_path, "w+") if self.log_path else tempfile.TemporaryFile("w+")  # noqa: SIM115
        # its own process group: vLLM spawns an engine process and a resource tracker that must go with it
        self.proc = subprocess.Popen(cmd, env=_env(), stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=tempfile.gettempdir(), start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VllmStartError(f"vLLM server exited with {self.proc.returncode}:\n{self._tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise VllmStartError(f"vLLM server did not answer within {timeout_s:.0f} s:\n{self._tail()}")

    def _tail(self) -> str:
        """The last lines the server wrote (for error messages)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-3000:]

    def stop(self) -> None:
        """Terminate the server and the processes it spawned (its process group; SIGKILL after 10 s)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:  # already gone
                pass
            with contextlib.suppress(ProcessLookupError):  # stragglers of the group (resource tracker)
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


if __name__ == "__main__":  # python -m omni_agent.engine.vllm_server: print the environment's Python
    print(vllm_python(), file=sys.stdout)
