"""``omni-agent demo``: start the runtime on the tiny preset and drive one full turn through it.

There is no trained demo model yet, so the weights are random: the demo shows the runtime's real
paths end to end (prompt processing, engine, streaming, speech, tools), not sensible answers.
Each stage reports what it did and how long it took; a stage whose part is not installed says so.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from omni_agent.settings import Settings

RANDOM_WEIGHTS_NOTICE = (
    "NOTE: the 'tiny' preset has RANDOM weights (no trained weights can be downloaded here); "
    "outputs are gibberish by design. Point --model-path at a Ming-Lite-Omni-1.5 checkpoint for real answers."
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("demo", parents=[common], help="run one full turn through the runtime (tiny preset)",
                              description=__doc__)
    p.add_argument("--out", default="demo-out", help="folder for the demo's outputs (default demo-out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from omni_agent.demo import STAGES

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.model.path is None:
        print(RANDOM_WEIGHTS_NOTICE)
    failures = 0
    for name, stage in STAGES:
        failures += _run_stage(name, stage, settings, out)
    print(f"demo finished: outputs in {out}/" + (f" ({failures} stage(s) failed)" if failures else ""))
    return 1 if failures else 0


def _run_stage(name: str, stage: Callable[[Settings, Path], str], settings: Settings, out: Path) -> int:
    t0 = time.perf_counter()
    print(f"== {name}")
    try:
        summary = stage(settings, out)
    except Exception as e:  # a demo stage failing must not hide the others
        print(f"   FAILED after {time.perf_counter() - t0:.2f} s: {type(e).__name__}: {e}")
        return 1
    print(f"   {summary} ({time.perf_counter() - t0:.2f} s)")
    return 0
