"""vLLM plugin for Ming-Lite-Omni 1.5's thinker (``BailingMMNativeForConditionalGeneration``).

vLLM calls ``register()`` in every one of its processes (entry point ``vllm.general_plugins``). It
registers Ming's ``config.json`` type (``bailingmm``) with transformers and the model class with vLLM's
registry; the class module is imported lazily, by vLLM, when a model needs it.

This package imports only vLLM, torch and transformers (plus libraries vLLM itself depends on), so it
installs with ``--no-deps`` into a vLLM environment (``make vllm``).
"""

ARCHITECTURE = "BailingMMNativeForConditionalGeneration"


def register() -> None:
    """Register the config type and the model class (idempotent)."""
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from omni_agent_vllm.config import BailingMMConfig

    try:
        AutoConfig.register(BailingMMConfig.model_type, BailingMMConfig)
    except ValueError:  # already registered in this process
        pass
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "omni_agent_vllm.model:BailingMMNativeForConditionalGeneration")
