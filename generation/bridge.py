"""From the thinker's query-token states to the DiT's text stream (Ming's ``mlp/`` + ``connector/``).

    query states [B, Q, D_llm]  (last hidden states of the 16x16 query tokens, Q = 256)
      -> proj_in      [B, Q, D_conn]
      -> connector    [B, Q, D_conn]   (Qwen2 layers, bidirectional attention)
      -> proj_out     [B, Q, C]        (C = diffusion_c_input_dim)
      -> L2 norm
      -> mlp          [B, Q, J]        (ToClipMLP: fc1-LN-ReLU-fc2-LN; J = DiT joint_attention_dim)
    pooled = mean over Q, then adaptive average pool to the DiT's pooled_projection_dim  [B, P]

Legend: B batch, Q query tokens, D_llm thinker width, D_conn connector width, J DiT text width.
The learnable query tokens themselves (``query_tokens_dict.{4x4,8x8,16x16}``) live here too: the
thinker needs them as input embeddings (see ``generation.conditioning``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from generation.config import DiffusionConfig


class ToClipMLP(nn.Module):
    """Ming's projection to the DiT's text width: fc1 -> LayerNorm -> ReLU -> fc2 -> LayerNorm."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.layer_norm1 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)
        self.layer_norm2 = nn.LayerNorm(output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.layer_norm1(self.fc1(x)))
        return self.layer_norm2(self.fc2(x))


class ImageGenBridge(nn.Module):
    """Query tokens, ``proj_in``, connector, ``proj_out``, L2 norm and the MLP to the DiT.

    Args:
        config: Decoder hyperparameters.
        connector: A ``transformers`` causal-LM (Qwen2) whose decoder layers are run with a full
            (bidirectional) mask; built from ``config.connector`` when None.
        pooled_dim: The DiT's ``pooled_projection_dim``.
        joint_dim: The DiT's ``joint_attention_dim``.
    """

    def __init__(self, config: DiffusionConfig, *, connector: nn.Module | None = None,
                 pooled_dim: int | None = None, joint_dim: int | None = None):
        super().__init__()
        self.config = config
        if connector is None:
            from transformers import Qwen2ForCausalLM

            connector = Qwen2ForCausalLM(config.connector.to_qwen2())
        for layer in connector.model.layers:  # Ming flips the flag too; our explicit mask is what counts
            layer.self_attn.is_causal = False
        self.connector = connector
        d_conn = connector.config.hidden_size
        self.query_tokens_dict = nn.ParameterDict({
            f"{s}x{s}": nn.Parameter(F.normalize(torch.randn(s * s, config.llm_hidden_size), dim=-1))
            for s in config.img_gen_scales
        })
        self.proj_in = nn.Linear(config.llm_hidden_size, d_conn)
        self.proj_out = nn.Linear(d_conn, config.diffusion_c_input_dim)
        self.joint_dim = joint_dim or config.dit.joint_attention_dim
        self.pooled_dim = pooled_dim or config.dit.pooled_projection_dim
        self.mlp = ToClipMLP(config.diffusion_c_input_dim, config.mlp_hidden_size, self.joint_dim)

    @property
    def num_query_tokens(self) -> int:
        return self.config.num_query_tokens

    def query_embeds(self) -> torch.Tensor:
        """All scales' query tokens in prompt order: ``[sum(s*s), D_llm]`` (16+64+256 in Ming)."""
        return torch.cat([self.query_tokens_dict[f"{s}x{s}"] for s in self.config.img_gen_scales], dim=0)

    def forward(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map query states ``[B, Q, D_llm]`` to ``(encoder_hidden_states [B, Q, J], pooled [B, P])``."""
        x = self.proj_in(condition.to(self.proj_in.weight.dtype))  # [B, Q, D_conn]
        b, q, _ = x.shape
        full = torch.ones(b, 1, q, q, dtype=torch.bool, device=x.device)  # bidirectional attention
        x = self.connector.model(inputs_embeds=x, attention_mask=full).last_hidden_state  # [B, Q, D_conn]
        x = self.proj_out(x)  # [B, Q, C]
        if self.config.connector_norm:
            x = F.normalize(x, dim=-1)
        hidden = self.mlp(x)  # [B, Q, J]
        pooled = hidden.mean(dim=1, keepdim=True)  # [B, 1, J]
        pooled = F.adaptive_avg_pool1d(pooled, self.pooled_dim).squeeze(1)  # [B, P]
        return hidden, pooled

    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for ``mlp/model.safetensors`` (Ming's key names; the connector is saved apart)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("connector.")}
