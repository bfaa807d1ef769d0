"""Benchmark registry: ``omni-agent bench NAME [--json]``.

Each benchmark lives in its own module here and registers itself with ``@benchmark``. A benchmark
is a function ``(ctx: BenchContext) -> dict`` returning a flat JSON object whose keys are a
contract (other code and the README rely on them). Heavy imports belong inside the function.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omni_agent.settings import Settings

BenchFn = Callable[["BenchContext"], dict[str, Any]]


@dataclass
class BenchContext:
    settings: Settings
    quick: bool = False
    """Smaller workloads (used by the test-suite smoke run); figures are then not for the README."""
    options: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = field(default=lambda message: None)
    """Called with a short line as each phase starts (``omni-agent bench`` prints them on stderr)."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    fn: BenchFn
    help: str


_REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, help: str) -> Callable[[BenchFn], BenchFn]:
    def deco(fn: BenchFn) -> BenchFn:
        _REGISTRY[name] = Benchmark(name, fn, help)
        return fn

    return deco


def registry() -> dict[str, Benchmark]:
    """Import every benchmark module once, then return name -> Benchmark."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return dict(sorted(_REGISTRY.items()))
