"""Ming's ``config.json`` (``model_type: bailingmm``) as a transformers config vLLM can read.

vLLM sizes the KV cache and the rotary embedding from the *text* config, so ``llm_config`` becomes a
``PretrainedConfig`` of its own (``text_config``) with ``rope_parameters`` in vLLM's spelling; the
vision and audio sections stay plain namespaces. Nothing here changes a value of Ming's file.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from transformers import PretrainedConfig


class BailingMoeTextConfig(PretrainedConfig):
    """Ming's ``llm_config`` (Ling-lite, ``BailingMoeForCausalLM``)."""

    model_type = "bailing_moe_mm_text"

    def __init__(self, **kwargs: Any) -> None:
        rope = dict(kwargs.pop("rope_scaling", None) or {})
        kwargs.pop("rope_parameters", None)
        defaults = dict(vocab_size=126464, hidden_size=2048, num_hidden_layers=28, num_attention_heads=16,
                        num_key_value_heads=4, head_dim=None, rms_norm_eps=1e-5, rope_theta=600000.0,
                        max_position_embeddings=32768, num_experts=64, num_experts_per_tok=6,
                        moe_intermediate_size=1408, num_shared_experts=2, norm_topk_prob=True, use_qkv_bias=False,
                        use_bias=False, norm_head=True, first_k_dense_replace=0, multi_gate=True,
                        mrope_section=[16, 24, 24], video_rope_section=[48, 16], tie_word_embeddings=False)
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        tie = kwargs.pop("tie_word_embeddings")
        super().__init__(tie_word_embeddings=tie, **kwargs)
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.intermediate_size = self.moe_intermediate_size  # vLLM's Bailing block reads it (unused by MoE layers)
        self.embedding_dropout = 0.0
        self.rope_type_ming = rope.get("type", "3D")
        if self.rope_type_ming not in ("3D", "video_rope"):
            raise ValueError(f"llm_config.rope_scaling.type {self.rope_type_ming!r} is not supported "
                             "(Ming-Lite-Omni 1.5 uses '3D' or 'video_rope')")
        section = list(rope.get("mrope_section") or (self.mrope_section if self.rope_type_ming == "3D"
                                                      else self.video_rope_section))
        # vLLM hands a model 3-row (t, h, w) positions whenever rope_parameters names an mrope_section.
        self.rope_parameters = {"rope_type": "default", "rope_theta": float(self.rope_theta),
                                "mrope_section": section}


class BailingMMConfig(PretrainedConfig):
    """The whole thinker: ``llm_config`` + ``vision_config`` + ``audio_config`` (+ untouched extras)."""

    model_type = "bailingmm"

    def __init__(self, llm_config: dict[str, Any] | None = None, vision_config: dict[str, Any] | None = None,
                 audio_config: dict[str, Any] | None = None, mlp_depth: int = 2, **kwargs: Any) -> None:
        # Sub-configs first: transformers validates token ids through get_text_config() inside __init__.
        self.llm_config = dict(llm_config or {})
        self.vision_config = dict(vision_config or {})
        self.audio_config = dict(audio_config or {})
        self.mlp_depth = int(mlp_depth)
        self.text_config = BailingMoeTextConfig(**self.llm_config)
        super().__init__(**kwargs)

    def get_text_config(self, *args: Any, **kwargs: Any) -> PretrainedConfig:
        return self.text_config

    def vision(self) -> SimpleNamespace:
        """Qwen2.5-VL ViT hyperparameters (Ming's ``vision_config``, with the released defaults)."""
        v = dict(depth=32, hidden_size=1280, intermediate_size=3456, num_heads=16, in_channels=3, patch_size=14,
                 temporal_patch_size=2, spatial_merge_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                 out_hidden_size=8192, rms_norm_eps=1e-6, rope_theta=10000.0)
        v.update({k: val for k, val in self.vision_config.items() if k in v})
        if "in_chans" in self.vision_config and "in_channels" not in self.vision_config:
            v["in_channels"] = self.vision_config["in_chans"]
        return SimpleNamespace(**v)

    def audio(self) -> SimpleNamespace:
        """Whisper encoder + projector hyperparameters (``audio_config`` and its ``whisper_encoder_config``)."""
        a = dict(n_mels=128, n_ctx=15000, n_state=1280, n_head=20, n_layer=32, ds_kernel_size=3, ds_stride=2,
                 norm_query_embeds=True)
        whisper = self.audio_config.get("whisper_encoder_config") or getattr(self, "whisper_config", None) or {}
        a.update({k: v for k, v in {**self.audio_config, **whisper}.items() if k in a})
        return SimpleNamespace(**a)
