"""The demo's stages, in the order a user's turn flows through the runtime.

Each stage is ``(settings, out_dir) -> summary line``. They use only the public APIs of the parts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omni_agent.settings import Settings


def stage_thinker(settings: Settings, out: Path) -> str:
    from omni_agent.model.processor import OmniProcessor
    from omni_agent.model.thinker import Thinker

    thinker = Thinker.from_preset(settings.model.preset, seed=settings.model.seed)
    processor = OmniProcessor.for_preset(settings.model.preset)
    prompt = processor([{"role": "user", "content": "Hello! Who are you?"}])
    n = sum(p.numel() for p in thinker.parameters())
    return f"thinker '{settings.model.preset}' built ({n / 1e6:.1f} M params); prompt has {len(prompt.input_ids)} tokens"


STAGES: list[tuple[str, Callable[[Settings, Path], str]]] = [
    ("thinker: build the model and process a prompt", stage_thinker),
]
