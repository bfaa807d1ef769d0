"""Shared test setup: offline, deterministic, small thread pools (CI has 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
