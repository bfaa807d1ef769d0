"""``omni-agent demo``: start the runtime on the tiny preset and drive one full turn through it.

There is no trained demo model yet, so the weights are random: the demo shows the runtime's real
paths end to end (prompt processing, engine, streaming, speech, tools), not sensible answers.
Each stage reports what it did and how long it took; the demo ends with a summary of what ran,
where the outputs are and whether the weights were random.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omni_agent.preflight import random_weights_notice
from omni_agent.settings import Settings


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("demo", parents=[common], help="run one full turn through the runtime (tiny preset)",
                              description=__doc__)
    p.add_argument("--out", default="demo-out", help="folder for the demo's outputs (default demo-out)")
    p.add_argument("--quick", action="store_true",
                   help="shortest replies and one diffusion step (same code paths; what the test suite runs)")
    p.set_defaults(func=run)


@dataclass
class StageResult:
    name: str
    ok: bool
    seconds: float
    line: str
    """The stage's summary line, or the error that stopped it."""


def run(args: argparse.Namespace, settings: Settings) -> int:
    from omni_agent.demo import STAGES

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    random_weights_notice(settings, "demo")
    results = [_run_stage(name, stage, settings, out, args.quick) for name, stage in STAGES]
    print(summary(results, out, settings))
    return 0 if all(r.ok for r in results) else 1


def _run_stage(name: str, stage: Callable[[Settings, Path, bool], str], settings: Settings, out: Path,
               quick: bool) -> StageResult:
    t0 = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        line = stage(settings, out, quick)
    except Exception as e:  # a demo stage failing must not hide the others
        result = StageResult(name, False, time.perf_counter() - t0, f"{type(e).__name__}: {e}")
        print(f"   FAILED after {result.seconds:.2f} s: {result.line}", flush=True)
        return result
    result = StageResult(name, True, time.perf_counter() - t0, line)
    print(f"   {line} ({result.seconds:.2f} s)", flush=True)
    return result


def summary(results: list[StageResult], out: Path, settings: Settings) -> str:
    """The closing block: each stage with its outcome, the files written, and what the weights were."""
    failed = sum(not r.ok for r in results)
    lines = ["", f"== demo summary: {len(results) - failed} of {len(results)} stages passed"]
    for r in results:
        lines.append(f"   {'ok    ' if r.ok else 'FAILED'} {r.name} ({r.seconds:.1f} s)")
        if not r.ok:
            lines.append(f"          {r.line}")
    shown = []
    for p in sorted(out.iterdir()):  # what each stage left at the top level; folders with their file count
        shown.append(f"{p.name}/ ({sum(f.is_file() for f in p.rglob('*'))} files)" if p.is_dir() else p.name)
    lines.append(f"   outputs in {out.resolve()}/: {', '.join(shown)}")
    if settings.model.path:
        lines.append(f"   weights: the checkpoint in {settings.model.path}")
    else:
        lines.append(f"   weights: RANDOM ('{settings.model.preset}' preset, seed {settings.model.seed}): the runtime's "
                     "paths are real, the answers, speech and images are gibberish by design")
    return "\n".join(lines)
