"""The thinker: a Ming-Lite-Omni-1.5-style MoE LLM with vision and audio encoders.

- ``config``: ``ThinkerConfig`` and its presets (``tiny``, ``ming-lite-omni-1.5``), Ming's config.json.
- ``bailing_moe``: the BailingMoe decoder (fused qkv, GQA, MRoPE, MoE with per-modality routers).
- ``moe``: grouped experts (stacked weights, grouped GEMMs) behind ``bailing_moe.MoE``.
- ``fit``: the memory check that refuses a model the device cannot hold.
- ``errors``: ``PlaceholderMismatchError``, ``ConfigError``.
- ``thinker``: ``Thinker`` (encoders + LLM), ``DynamicCache``, ``ThinkerOutput``.
- ``processor``: ``OmniProcessor`` (chat format, placeholders, MRoPE ids), ``ProcessedPrompt``, ``MMItem``.
- ``checkpoint``: loading and saving Ming's checkpoint layout.

Import the submodules directly; this package imports nothing heavy on its own.
"""
