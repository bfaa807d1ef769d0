"""Pick the engine named by the settings: the embedded ``AsyncEngine`` (default) or ``VllmEngine``.

For vLLM without ``engine.vllm_url`` a server is started here (``VllmServer``) on the checkpoint folder;
a preset without a folder is first saved once, in Ming's layout, under ``~/.cache/omni-agent/vllm/``
(vLLM loads models from files only).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def preset_checkpoint(preset: str, seed: int) -> Path:
    """A folder holding the seeded random weights of ``preset``, rewritten whenever they differ from what
    this version of the code builds (a preset's definition can change: a stale copy would make vLLM serve
    another model than the embedded engine)."""
    import hashlib
    import shutil

    from omni_agent.model.thinker import Thinker

    root = Path(os.environ.get("OMNI_VLLM_CACHE", Path.home() / ".cache" / "omni-agent")) / "vllm"
    path = root / f"{preset}-seed{seed}"
    model = Thinker.from_preset(preset, seed=seed)
    h = hashlib.sha256(repr(model.config).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    stamp = path / ".omni-agent-digest"
    if not stamp.is_file() or stamp.read_text() != h.hexdigest():
        shutil.rmtree(path, ignore_errors=True)
        model.save_pretrained(path)
        stamp.write_text(h.hexdigest())
    return path


def engine_from_settings(settings: Any) -> Any:
    """The engine for ``settings.engine.backend``.

    Raises:
        omni_agent.engine.vllm_server.VllmEnvMissing: ``vllm`` without a vLLM environment.
        omni_agent.engine.vllm_server.VllmStartError: the started vLLM server did not come up (its log tail
            is in the message).
    """
    e, m = settings.engine, settings.model
    if e.backend == "embedded":
        from omni_agent.engine.engine import AsyncEngine

        return AsyncEngine.from_settings(settings)
    from omni_agent.engine.vllm_client import VllmEngine
    from omni_agent.engine.vllm_server import VllmServer
    from omni_agent.model.processor import OmniProcessor

    path = str(m.path) if m.path else str(preset_checkpoint(m.preset, m.seed))
    processor = OmniProcessor.from_pretrained(path)
    # vLLM refuses a length past the model's positions (the tiny preset has 4096)
    max_len = min(e.max_model_len, processor.config.llm.max_position_embeddings)
    server, url = None, e.vllm_url
    if url is None:
        server = VllmServer(path, max_model_len=max_len, extra_args=list(e.vllm_args))
        url = server.start()
        log.info("vLLM server with the Ming plugin on %s (model %s)", url, path)
    return VllmEngine(url, processor, max_model_len=max_len, model_path=path, server=server)
