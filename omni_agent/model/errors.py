"""Errors shared by the thinker's modules (kept apart so that no module imports another for a class)."""

from __future__ import annotations


class PlaceholderMismatchError(ValueError):
    """Media placeholders and media embeddings disagree (count or length): the prompt is malformed."""


class ConfigError(ValueError):
    """A model config that cannot be served, with a message naming the key and what is wrong."""
