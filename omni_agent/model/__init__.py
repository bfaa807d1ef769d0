"""The thinker: a Ming-Lite-Omni-1.5-style MoE LLM with vision and audio encoders.

- ``config``: ``ThinkerConfig`` and its presets (``tiny``, ``ming-lite-omni-1.5``), Ming's config.json.
- ``bailing_moe``: the BailingMoe decoder (fused qkv, GQA, MRoPE, MoE with per-modality routers).
- ``thinker``: ``Thinker`` (encoders + LLM), ``DynamicCache``, ``ThinkerOutput``.
- ``processor``: ``OmniProcessor`` (chat format, placeholders, MRoPE ids), ``ProcessedPrompt``, ``MMItem``.
- ``checkpoint``: loading and saving Ming's checkpoint layout.

Import the submodules directly; this package imports nothing heavy on its own.
"""
