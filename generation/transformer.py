"""Ming's MMDiT: diffusers' ``SD3Transformer2DModel`` plus a noise refiner and a reference branch.

Ming-Lite-Omni 1.5 ships its own subclass of the SD3 transformer (``diffusion/sd3_transformer.py`` in
Ming's tree). On top of SD3 it has three parts, all stored in the release's ``transformer/`` weights:

- ``noise_refiner``: two single-stream blocks (diffusers' ``SD3SingleTransformerBlock``: AdaLN-Zero,
  self-attention, MLP) that ALWAYS run on the patch-embedded noisy latents, with or without a
  reference image;
- ``ref_pos_embed``: a second patch embedding (own projection, same 2D sin-cos table layout) for the
  reference (edit) image's VAE latents;
- ``ref_image_refiner``: two more single-stream blocks on the reference tokens.

Forward (legend: B batch, N noisy-image tokens, R = N reference tokens, L text tokens, H width):

    temb  = time_text_embed(t, pooled)                     [B, H]
    ctx   = context_embedder(text)                         [B, L, H]
    x     = noise_refiner(pos_embed(latents), temb)        [B, N, H]
    ref   = ref_image_refiner(ref_pos_embed(ref), temb)    [B, R, H]   (editing only)
    x     = cat(x, ref)                                    [B, N+R, H]
    ctx, x = joint blocks(x, ctx, temb)
    out   = proj_out(norm_out(x[:, :N], temb)) -> unpatchify [B, C, h, w]

The reference latents must have the noisy latents' shape (Ming asserts the same); the first half of the
joint sequence is kept. Ming's constructor always builds two refiner layers whatever
``num_refiner_layers`` says; so does this class. Ming's ``vae_ref_channel_cat=True`` variant is broken in
its own code (the channel-doubled ``pos_embed`` never receives doubled channels), so it is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import PatchEmbed
from diffusers.models.transformers.transformer_sd3 import SD3SingleTransformerBlock, SD3Transformer2DModel
from torch import nn

MING_REFINER_LAYERS = 2  # hard-coded in Ming's constructor


class MingSD3Transformer2DModel(SD3Transformer2DModel):
    """SD3 MMDiT with Ming's noise refiner, reference patch embedding and reference refiner.

    Args: those of ``SD3Transformer2DModel``, plus Ming's ``num_refiner_layers`` (recorded; two layers
    are built, as in Ming) and ``vae_ref_channel_cat`` (must be False).
    """

    @register_to_config
    def __init__(self, sample_size: int = 128, patch_size: int = 2, in_channels: int = 16, num_layers: int = 18,
                 num_refiner_layers: int = MING_REFINER_LAYERS, attention_head_dim: int = 64,
                 num_attention_heads: int = 18, joint_attention_dim: int = 4096, caption_projection_dim: int = 1152,
                 pooled_projection_dim: int = 2048, out_channels: int = 16, pos_embed_max_size: int = 96,
                 dual_attention_layers: tuple[int, ...] = (), qk_norm: str | None = None,
                 vae_ref_channel_cat: bool = False):
        if vae_ref_channel_cat:
            raise ValueError("transformer config has vae_ref_channel_cat=true: Ming's own forward cannot run that "
                             "variant (pos_embed expects doubled channels it never gets); not supported")
        super().__init__(sample_size=sample_size, patch_size=patch_size, in_channels=in_channels,
                         num_layers=num_layers, attention_head_dim=attention_head_dim,
                         num_attention_heads=num_attention_heads, joint_attention_dim=joint_attention_dim,
                         caption_projection_dim=caption_projection_dim, pooled_projection_dim=pooled_projection_dim,
                         out_channels=out_channels, pos_embed_max_size=pos_embed_max_size,
                         dual_attention_layers=dual_attention_layers, qk_norm=qk_norm)
        self.ref_pos_embed = PatchEmbed(height=sample_size, width=sample_size, patch_size=patch_size,
                                        in_channels=in_channels, embed_dim=self.inner_dim,
                                        pos_embed_max_size=pos_embed_max_size)

        def refiner() -> nn.ModuleList:
            return nn.ModuleList(SD3SingleTransformerBlock(self.inner_dim, num_attention_heads, attention_head_dim)
                                 for _ in range(MING_REFINER_LAYERS))

        self.noise_refiner = refiner()
        self.ref_image_refiner = refiner()

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep: torch.Tensor,
                ref_hidden_states: torch.Tensor | None = None, return_dict: bool = False, **unused: Any
                ) -> tuple[torch.Tensor] | Any:
        """Predict the flow velocity ``[B, C, h, w]``.

        Args:
            hidden_states: Noisy latents ``[B, C, h, w]``.
            encoder_hidden_states: ``[B, L, J]`` text stream (the ToClipMLP's output).
            pooled_projections: ``[B, P]`` pooled condition.
            timestep: ``[B]`` timesteps on the scheduler's 0..1000 scale.
            ref_hidden_states: Reference latents ``[B, C, h, w]`` (editing) or None.
            return_dict: Return a ``Transformer2DModelOutput`` instead of a tuple.
        """
        if unused:
            raise TypeError(f"MingSD3Transformer2DModel.forward does not take {sorted(unused)}")
        height, width = hidden_states.shape[-2:]
        temb = self.time_text_embed(timestep, pooled_projections)  # [B, H]
        ctx = self.context_embedder(encoder_hidden_states)  # [B, L, H]
        x = self.pos_embed(hidden_states)  # [B, N, H]
        for layer in self.noise_refiner:
            x = layer(x, temb)
        n = x.shape[1]
        if ref_hidden_states is not None:
            if ref_hidden_states.shape != hidden_states.shape:
                raise ValueError(f"reference latents {tuple(ref_hidden_states.shape)} must match the noisy "
                                 f"latents {tuple(hidden_states.shape)}")
            ref = self.ref_pos_embed(ref_hidden_states)  # [B, R, H]
            for layer in self.ref_image_refiner:
                ref = layer(ref, temb)
            x = torch.cat([x, ref], dim=1)  # [B, N+R, H]
        for block in self.transformer_blocks:
            ctx, x = block(hidden_states=x, encoder_hidden_states=ctx, temb=temb)
        x = self.proj_out(self.norm_out(x[:, :n], temb))  # [B, N, p*p*C]
        out = unpatchify(x, height, width, self.config.patch_size, self.out_channels)
        if not return_dict:
            return (out,)
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=out)


def unpatchify(x: torch.Tensor, height: int, width: int, p: int, c: int) -> torch.Tensor:
    """``[B, (h/p)*(w/p), p*p*C]`` patch tokens -> ``[B, C, h, w]``."""
    b = x.shape[0]
    x = x.reshape(b, height // p, width // p, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, c, height, width)
