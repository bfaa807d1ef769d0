"""A thin wrapper over diffusers' ``SD3Transformer2DModel`` that also takes reference-image latents.

For editing, the reference image's VAE latents are patch-embedded with the DiT's own ``pos_embed``
(same projection, same 2D sin-cos grid, so a reference patch lines up with the target patch at the
same place) and then marked with a learned ``ref_embed`` vector: their own position embedding. They
are appended to the image tokens, attend jointly with the target and the text, and are sliced off
before ``norm_out``/``proj_out``. Without reference latents the wrapper calls the diffusers model
unchanged, so text-to-image is exactly SD3.

Legend: B batch, N target image tokens, R reference tokens, L text tokens, H inner width.
"""

from __future__ import annotations

import torch
from torch import nn


class EditableSD3Transformer(nn.Module):
    """``SD3Transformer2DModel`` plus reference-latent tokens.

    Args:
        transformer: A diffusers ``SD3Transformer2DModel`` (injected, not built here).
        ref_embed: Optional initial value for the reference-token embedding ``[H]`` (zeros when None).
    """

    def __init__(self, transformer: nn.Module, ref_embed: torch.Tensor | None = None):
        super().__init__()
        self.transformer = transformer
        inner = transformer.inner_dim
        init = torch.zeros(inner) if ref_embed is None else ref_embed.detach().clone().reshape(inner)
        self.ref_embed = nn.Parameter(init)

    @property
    def config(self):  # the diffusers model's FrozenDict config
        return self.transformer.config

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, ref_latents: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the flow velocity ``[B, C, h, w]`` for ``latents`` ``[B, C, h, w]``.

        Args:
            latents: Noisy latents.
            timestep: ``[B]`` timesteps on the scheduler's 0..1000 scale.
            encoder_hidden_states: ``[B, L, J]`` text-stream tokens.
            pooled_projections: ``[B, P]`` pooled condition.
            ref_latents: ``[B, C, h', w']`` reference latents (editing) or None.
        """
        t = self.transformer
        if ref_latents is None:
            return t(hidden_states=latents, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                     pooled_projections=pooled_projections, return_dict=False)[0]
        height, width = latents.shape[-2:]
        x = t.pos_embed(latents).contiguous()  # [B, N, H]
        n = x.shape[1]
        ref = t.pos_embed(ref_latents) + self.ref_embed.to(x.dtype)  # [B, R, H]
        x = torch.cat([x, ref], dim=1)  # [B, N+R, H]
        temb = t.time_text_embed(timestep, pooled_projections)  # [B, H]
        ctx = t.context_embedder(encoder_hidden_states)  # [B, L, H]
        for block in t.transformer_blocks:
            ctx, x = block(hidden_states=x, encoder_hidden_states=ctx, temb=temb)
        x = t.proj_out(t.norm_out(x[:, :n], temb))  # [B, N, p*p*C]
        return _unpatchify(x, height, width, t.config.patch_size, t.out_channels)


def _unpatchify(x: torch.Tensor, height: int, width: int, p: int, c: int) -> torch.Tensor:
    b = x.shape[0]
    x = x.reshape(b, height // p, width // p, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, c, height, width)
