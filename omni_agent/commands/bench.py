"""``omni-agent bench NAME [--json]``: run a registered benchmark."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator

from omni_agent.cli import add_setting_flag
from omni_agent.preflight import random_weights_notice
from omni_agent.settings import Settings


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("bench", parents=[common], help="run a benchmark (bench list shows them)",
                              description="Run a benchmark. With --json the last stdout line is one JSON object.")
    p.add_argument("name", help="benchmark name, or 'list'")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.add_argument("--quick", action="store_true", help="smaller workload (a smoke test, not a figure to report)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="benchmark-specific option (repeatable)")
    add_setting_flag(p, "--engine", "engine.backend", choices=["embedded", "vllm"],
                     help="engine for engine-driven benchmarks (bench engine --engine vllm compares with embedded)")
    p.set_defaults(func=run)


HEARTBEAT_S = 10.0  # a benchmark phase can run for a minute: say it is still alive this often


@contextlib.contextmanager
def _heartbeat(progress: Callable[[str], None]) -> Iterator[None]:
    """Print "still running" every HEARTBEAT_S seconds from a thread, for benchmarks without phases."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            progress("still running")

    thread = threading.Thread(target=beat, name="bench-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _print_table(name: str, result: dict, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench {name} ({seconds:.1f} s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    Console(file=sys.stdout).print(table)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from omni_agent.bench import BenchContext, registry

    benches = registry()
    if args.name == "list":
        for b in benches.values():
            print(f"{b.name:12s} {b.help}")
        return 0
    if args.name not in benches:
        known = ", ".join(benches) or "none yet"
        print(f"omni-agent: error: unknown benchmark {args.name!r} (known: {known})", file=sys.stderr)
        return 2
    options = {}
    for item in args.opt:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"omni-agent: error: --opt expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        options[key] = value
    random_weights_notice(settings, "bench")
    t0 = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[bench {args.name} {time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    ctx = BenchContext(settings=settings, quick=args.quick, options=options, progress=progress)
    progress(f"started ({'--quick' if args.quick else 'full workload'}; a heartbeat every {HEARTBEAT_S:g} s)")
    from omni_agent.engine.vllm_server import VllmEnvMissing, VllmStartError

    try:
        with _heartbeat(progress):
            result = benches[args.name].fn(ctx)
    except (VllmEnvMissing, VllmStartError) as e:  # --engine vllm without a usable vLLM: one line, no traceback
        print(f"omni-agent: error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    progress("done")
    _print_table(args.name, result, seconds)
    if args.json:
        sys.stdout.flush()
        print(json.dumps(result, sort_keys=False))
    return 0
