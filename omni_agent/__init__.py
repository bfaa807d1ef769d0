"""omni-agent: a runtime that serves a Ming-Omni-style omni model and runs agents on it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("omni-agent")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
