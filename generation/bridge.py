"""From the thinker's query-token states to the DiT's text stream (Ming's ``mlp/`` + ``connector/``).

Two stages, split where Ming builds its null condition:

    condition(query states [B, Q, D_llm])          (Q = 256: the 16x16 query tokens' last hidden states)
      -> proj_in      [B, Q, D_conn]
      -> connector    [B, Q, D_conn]   (Qwen2 layers, bidirectional: an all-ones 4D mask, final norm)
      -> proj_out     [B, Q, D_llm]    (Ming projects back to the thinker width)
      -> L2 norm                       = c, Ming's ``condition_embeds``

    project(c)                         (Ming's ``SD3Model_withMLP``, run inside every DiT call)
      -> mlp          [B, Q, J]        (ToClipMLP: fc1-LN-ReLU-fc2-LN; 2048 and J = 4096 in Ming)
      pooled = mean over Q, then adaptive average pool to P   [B, P]   (P = 2048 in Ming)

Ming's null (unconditional) condition is ``c * 0`` BEFORE the MLP (``modeling_bailingmm.generate``), so
the null text stream is ``mlp(0)`` -- the MLP's biases through its LayerNorms, not zeros -- and the null
pooled vector is pooled from it. The ``pooled_prompt_embeds`` Ming's pipeline prepares are never passed
to its transformer; the pooled vector always comes from the MLP output of the same branch.

Legend: B batch, Q query tokens, D_llm thinker width, D_conn connector width, J DiT text width,
P the DiT's pooled_projection_dim. The learnable query tokens (``query_tokens_dict.{4x4,8x8,16x16}``)
live here too: the thinker needs them as input embeddings (see ``generation.conditioning``).
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
        config: Decoder hyperparameters (``llm_hidden_size``, ``mlp_hidden_size``, scales).
        connector: A ``transformers`` causal-LM (Qwen2) whose decoder layers are run with a full
            (bidirectional) mask; built from ``config.connector`` when None.
        pooled_dim: The DiT's ``pooled_projection_dim``.
        joint_dim: The DiT's ``joint_attention_dim`` (the MLP's output width).
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
        d_conn, d_llm = connector.config.hidden_size, config.llm_hidden_size
        self.query_tokens_dict = nn.ParameterDict({
            f"{s}x{s}": nn.Parameter(F.normalize(torch.randn(s * s, d_llm), dim=-1)) for s in config.img_gen_scales
        })
        self.proj_in = nn.Linear(d_llm, d_conn)
        self.proj_out = nn.Linear(d_conn, d_llm)
        self.joint_dim = joint_dim or config.dit.joint_attention_dim
        self.pooled_dim = pooled_dim or config.dit.pooled_projection_dim
        self.mlp = ToClipMLP(d_llm, config.mlp_hidden_size, self.joint_dim)

    @property
    def num_query_tokens(self) -> int:
        return self.config.num_query_tokens

    def query_embeds(self) -> torch.Tensor:
        """All scales' query tokens in prompt order: ``[sum(s*s), D_llm]`` (16+64+256 in Ming)."""
        return torch.cat([self.query_tokens_dict[f"{s}x{s}"] for s in self.config.img_gen_scales], dim=0)

    def condition(self, query_states: torch.Tensor) -> torch.Tensor:
        """Query states ``[B, Q, D_llm]`` -> Ming's ``condition_embeds`` ``[B, Q, D_llm]`` (L2-normalised)."""
        x = self.proj_in(query_states.to(self.proj_in.weight.dtype))  # [B, Q, D_conn]
        b, q, _ = x.shape
        full = torch.ones(b, 1, q, q, dtype=torch.bool, device=x.device)  # bidirectional attention
        x = self.connector.model(inputs_embeds=x, attention_mask=full).last_hidden_state  # [B, Q, D_conn]
        return F.normalize(self.proj_out(x), dim=-1)  # [B, Q, D_llm]

    def project(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition ``[B, Q, D_llm]`` -> ``(text stream [B, Q, J], pooled [B, P])`` as Ming's DiT wrapper does."""
        hidden = self.mlp(cond.to(self.mlp.fc1.weight.dtype))  # [B, Q, J]
        pooled = hidden.mean(dim=1, keepdim=True)  # [B, 1, J]
        pooled = F.adaptive_avg_pool1d(pooled, self.pooled_dim).squeeze(1)  # [B, P]
        return hidden, pooled

    def forward(self, query_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditional text stream and pooled vector: ``project(condition(query_states))``."""
        return self.project(self.condition(query_states))

    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for ``mlp/model.safetensors`` (Ming's key names; the connector is saved apart)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("connector.")}
