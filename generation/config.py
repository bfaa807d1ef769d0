"""Hyperparameters of the diffusion decoder, with a ``tiny`` preset next to the real one.

The real preset follows Ming-Lite-Omni 1.5's image-generation head: query tokens at scales
4x4/8x8/16x16 in the LLM width (2048), a Qwen2-style connector run bidirectionally, ``proj_out`` back
to the LLM width, the ``ToClipMLP`` (2048 -> 2048 -> 4096, LayerNorms) and Ming's SD3-medium MMDiT
(with its refiners, ``generation.transformer``) with the SD3 VAE. Ming reads no config for the MLP:
when a checkpoint loads, every width comes from the tensors and the sub-folders' ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PresetName = Literal["tiny", "ming-lite-omni-1.5"]


@dataclass
class ConnectorConfig:
    """A Qwen2 decoder stack used as a bidirectional transformer (Ming's ``connector/``)."""

    hidden_size: int = 896
    num_hidden_layers: int = 6
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    intermediate_size: int = 4864
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    vocab_size: int = 16  # unused by the connector (it only takes inputs_embeds); kept tiny on save

    def to_qwen2(self) -> Any:
        from transformers import Qwen2Config

        return Qwen2Config(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            intermediate_size=self.intermediate_size,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            vocab_size=self.vocab_size,
            max_position_embeddings=4096,
            tie_word_embeddings=False,
        )


@dataclass
class DiTConfig:
    """``SD3Transformer2DModel`` arguments (defaults: SD3-medium)."""

    sample_size: int = 128
    patch_size: int = 2
    in_channels: int = 16
    num_layers: int = 24
    attention_head_dim: int = 64
    num_attention_heads: int = 24
    joint_attention_dim: int = 4096
    caption_projection_dim: int = 1536
    pooled_projection_dim: int = 2048
    out_channels: int = 16
    pos_embed_max_size: int = 192


@dataclass
class VAEConfig:
    """``AutoencoderKL`` arguments (defaults: the SD3 VAE, 16 latent channels, factor 8)."""

    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 1.5305
    shift_factor: float = 0.0609

    def to_kwargs(self) -> dict[str, Any]:
        n = len(self.block_out_channels)
        return dict(
            in_channels=3,
            out_channels=3,
            latent_channels=self.latent_channels,
            block_out_channels=tuple(self.block_out_channels),
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            layers_per_block=self.layers_per_block,
            norm_num_groups=self.norm_num_groups,
            scaling_factor=self.scaling_factor,
            shift_factor=self.shift_factor,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )


@dataclass
class DiffusionConfig:
    """Everything needed to build the decoder (Ming's layout stores no config for the bridge part)."""

    llm_hidden_size: int = 2048
    img_gen_scales: tuple[int, ...] = (4, 8, 16)  # fixed in Ming's load_image_gen_modules
    mlp_hidden_size: int = 2048  # ToClipMLP's fc1 width (fixed at 2048 in Ming)
    scheduler_shift: float = 3.0
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)

    @property
    def num_query_tokens(self) -> int:
        """Query tokens fed to the DiT: the last (finest) scale, 16x16 = 256 in Ming."""
        return self.img_gen_scales[-1] ** 2

    @classmethod
    def preset(cls, name: PresetName | str) -> DiffusionConfig:
        """Return the ``tiny`` (tests, CPU) or ``ming-lite-omni-1.5`` configuration."""
        if name == "ming-lite-omni-1.5":
            return cls()
        if name == "tiny":
            return cls(
                llm_hidden_size=128,  # the tiny thinker preset's width
                mlp_hidden_size=64,
                connector=ConnectorConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=64),
                dit=DiTConfig(sample_size=32, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16,
                              num_attention_heads=2, joint_attention_dim=64, caption_projection_dim=32,
                              pooled_projection_dim=32, out_channels=4, pos_embed_max_size=64),
                vae=VAEConfig(latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                              norm_num_groups=4, scaling_factor=1.0, shift_factor=0.0),
            )
        raise ValueError(f"unknown diffusion preset {name!r} (known: tiny, ming-lite-omni-1.5)")
