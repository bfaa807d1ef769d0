"""``python -m omni_agent_vllm.check``: vLLM imports and this plugin is registered through its entry point."""

from __future__ import annotations

import sys


def main() -> int:
    import vllm
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    from vllm import ModelRegistry

    from omni_agent_vllm import ARCHITECTURE

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        print(f"vLLM {vllm.__version__}: {ARCHITECTURE} is not registered (is omni-agent-vllm installed?)",
              file=sys.stderr)
        return 1
    import torch

    print(f"vllm {vllm.__version__}, torch {torch.__version__}: {ARCHITECTURE} registered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
