"""Logging and progress helpers shared by every command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def setup_logging(level: str = "info") -> None:
    """Log to stderr so that stdout stays clean for results (``bench --json`` prints there)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def progress(iterable: Iterable[T], desc: str, total: int | None = None, disable: bool | None = None) -> Iterator[T]:
    """A progress bar on stderr for work that takes more than a couple of seconds.

    Hidden automatically when stderr is not a terminal, unless ``disable=False`` forces it on.
    """
    if disable is None:
        disable = not sys.stderr.isatty()
    yield from tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stderr, leave=False)
