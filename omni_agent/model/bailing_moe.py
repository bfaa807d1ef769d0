"""BailingMoe decoder (Ling-lite), the language model of Ming-Lite-Omni 1.5.

Reads top to bottom: blocks (norm, attention, MoE), the decoder stack, the causal-LM head, then the
rotary and mask helpers. Module and parameter names match Ming's checkpoint
(``model.word_embeddings``, ``layers.{i}.attention.query_key_value``, ``mlp.gate``, ...).

Shape legend:
    B batch, T new tokens, S cached + new tokens, D hidden, H query heads, K key/value heads,
    d head dim, E routed experts, A active experts per token, N tokens flattened (B*T), F expert width,
    V vocabulary.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from omni_agent.model.config import LLMConfig
from omni_agent.model.moe import PackedExperts, grouped_experts, pack_experts, resolve_impl

MODALITY_TEXT, MODALITY_IMAGE, MODALITY_AUDIO = 0, 1, 2


class KVCache(Protocol):
    """What attention needs from a cache: append this step's keys/values, get the whole history back."""

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` ``[B, K, T, d]`` for ``layer_idx``; return all keys/values ``[B, K, S, d]``."""
        ...


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    """GQA attention with one fused ``query_key_value`` projection and MRoPE."""

    def __init__(self, cfg: LLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.query_key_value = nn.Linear(cfg.hidden_size, (self.n_head + 2 * self.n_kv) * self.head_dim,
                                         bias=cfg.use_qkv_bias)
        self.dense = nn.Linear(self.n_head * self.head_dim, cfg.hidden_size, bias=cfg.use_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.query_key_value(x).view(B, T, self.n_head + 2 * self.n_kv, self.head_dim)
        q, k, v = qkv.split([self.n_head, self.n_kv, self.n_kv], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H|K, T, d]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # [B, K, S, d]
        S = k.shape[2]
        if mask is None and T > 1:
            mask = causal_mask(T, S, x.device)  # [T, S]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv != self.n_head)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # [B, T, H*d]
        return self.dense(y)


class MLP(nn.Module):
    """SwiGLU feed-forward; one routed expert, or the shared experts fused into one wider MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Softmax router with top-k selection and (optionally) renormalised weights."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.num_experts, cfg.hidden_size))
        self.top_k, self.norm_topk = cfg.num_experts_per_tok, cfg.norm_topk_prob

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.weight, std=std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = F.linear(x, self.weight).softmax(dim=-1, dtype=torch.float32)  # [N, E]
        weights, idx = scores.topk(self.top_k, dim=-1)  # [N, A]
        if self.top_k > 1 and self.norm_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights, idx


class MoE(nn.Module):
    """Routed experts + shared experts, with one router per modality (``gate``/``image_gate``/``audio_gate``).

    ``impl`` picks how the experts run (``omni_agent.model.moe``): ``auto`` (grouped GEMMs where torch
    has them for the device and dtype, else one matmul per expert on stacked weights), ``grouped_mm``,
    ``sorted`` or ``loop`` (the reference: one module call per expert).
    """

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.impl = "auto"
        self._packed: PackedExperts | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: module.unpack())
        self.gate = Router(cfg)
        self.multi_gate = cfg.multi_gate
        if cfg.multi_gate:
            self.image_gate = Router(cfg)
            self.audio_gate = Router(cfg)
        self.experts = nn.ModuleList(MLP(cfg.hidden_size, cfg.moe_intermediate_size) for _ in range(cfg.num_experts))
        self.shared_experts = (MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.num_shared_experts)
                               if cfg.num_shared_experts else None)

    def route(self, x: torch.Tensor, modality: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k weights and expert ids per token, each token through its modality's router.

        Every router scores every token and the modality picks per row (routers are tiny next to the
        experts), so routing has no data-dependent branch: no host sync, capturable in a graph.
        """
        weights, idx = self.gate(x)  # [N, A]
        if self.multi_gate and modality is not None:
            for mod_id, router in ((MODALITY_IMAGE, self.image_gate), (MODALITY_AUDIO, self.audio_gate)):
                sel = (modality == mod_id)[:, None]  # [N, 1]
                w_m, i_m = router(x)
                weights, idx = torch.where(sel, w_m, weights), torch.where(sel, i_m, idx)
        return weights, idx

    def unpack(self) -> None:
        """Forget the stacked weights (after parameters were replaced); the next forward packs again."""
        self._packed = None

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        self._packed = None  # .to()/.cuda() give every parameter its own new tensor
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, modality: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        flat = x.reshape(-1, D)  # [N, D]
        weights, idx = self.route(flat, None if modality is None else modality.reshape(-1))  # [N, A]
        impl = resolve_impl(self.impl, flat.device, flat.dtype)
        if impl == "loop":
            return self._forward_loop(flat, weights, idx).view(B, T, D)
        if self._packed is None:
            width = self.experts[0].gate_proj.weight.shape[0]
            self._packed = pack_experts(self.experts, self.shared_experts, width)
        return grouped_experts(flat, weights, idx, self._packed, impl == "grouped_mm").view(B, T, D)

    def _forward_loop(self, flat: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The reference: each expert's module called on its tokens, the shared MLP on all."""
        y = torch.zeros_like(flat, dtype=torch.float32)  # [N, D]
        # Sort the (token, slot) pairs by expert so each expert runs once on its tokens.
        order = idx.reshape(-1).argsort()  # [N*A]
        counts = torch.bincount(idx.reshape(-1), minlength=len(self.experts)).tolist()
        token_of = order // idx.shape[1]  # [N*A]
        w_sorted = weights.reshape(-1)[order]  # [N*A]
        start = 0
        for e, n in enumerate(counts):
            if n:
                tok = token_of[start:start + n]
                out = self.experts[e](flat[tok])  # [n, D]
                y.index_add_(0, tok, out.float() * w_sorted[start:start + n, None])
                start += n
        y = y.to(flat.dtype)
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)
        return y


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attention = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, modality: torch.Tensor | None,
                cache: KVCache | None, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attention(self.input_layernorm(x), cos, sin, cache, mask)
        return x + self.mlp(self.post_attention_layernorm(x), modality)


class BailingMoeModel(nn.Module):
    """Embeddings, decoder layers and the final norm (``model.model.*`` in Ming's checkpoint)."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, modality: torch.Tensor | None = None,
                cache: KVCache | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        # Rotary frequencies are recomputed (64 values) rather than kept as a buffer that .to(bf16) would round.
        inv_freq = rope_inv_freq(self.cfg.head_dim, self.cfg.rope_theta).to(x.device)  # [d/2]
        cos, sin = mrope_cos_sin(inv_freq, position_ids, self.cfg)  # [B, 1, T, d]
        if mask is not None:
            if mask.dtype != torch.bool:
                raise TypeError(f"attn_mask must be a bool tensor (True = attend), got {mask.dtype}")
            # A query that may attend to nothing (a padding row) would give NaN and poison the cache;
            # let it attend everywhere instead: its output is unused and stays finite.
            mask = mask | ~mask.any(dim=-1, keepdim=True)
        for layer in self.layers:
            x = layer(x, cos.to(x.dtype), sin.to(x.dtype), modality, cache, mask)
        return self.norm(x)


class BailingMoeForCausalLM(nn.Module):
    """The decoder plus the untied ``lm_head`` (``model.*`` in Ming's checkpoint)."""

    def __init__(self, cfg: LLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = BailingMoeModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, modality: torch.Tensor | None = None,
                cache: KVCache | None = None, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model(x, position_ids, modality, cache, mask)  # [B, T, D]
        return self.lm_head(hidden), hidden  # [B, T, V], [B, T, D]

    @torch.no_grad()
    def normalize_head(self) -> bool:
        """Apply Ming's ``norm_head``: scale every lm_head column to unit L2 norm over the vocabulary.

        Ming does this once, lazily, on its first inference call; we do it after loading. Idempotent:
        a head that is already normalised is left bit-for-bit unchanged. Returns whether it changed.
        """
        w = self.lm_head.weight
        if w.is_meta:
            return False
        norm = torch.linalg.vector_norm(w.float(), dim=0, keepdim=True)  # [1, D]
        if torch.allclose(norm, torch.ones_like(norm), atol=1e-3):
            return False
        w.copy_((w.float() / (norm + 1e-7)).to(w.dtype))
        return True


# ----------------------------------------------------------------------------- helpers


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))  # [d/2]


def mrope_cos_sin(inv_freq: torch.Tensor, position_ids: torch.Tensor, cfg: LLMConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos/sin ``[B, 1, T, d]`` for 3-row positions ``[3, B, T]`` (rows t, h, w).

    ``3D`` (Qwen2-VL MRoPE): frequency pairs are split ``mrope_section`` (e.g. 16/24/24) among t/h/w.
    ``video_rope``: the first ``video_rope_section[0]`` pairs (high frequencies) alternate h, w, h, w...
    and the last ``video_rope_section[1]`` pairs (the lowest frequencies) carry t.
    """
    if position_ids.dim() == 2:  # plain 1-D positions [B, T]: all three rows equal
        position_ids = position_ids.unsqueeze(0).expand(3, -1, -1)
    pos = position_ids.to(inv_freq.device, torch.float32)  # [3, B, T]
    freqs = pos[..., None] * inv_freq.float()  # [3, B, T, d/2]
    n_pairs = inv_freq.shape[0]
    if cfg.rope_type == "3D":
        row = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(cfg.mrope_section)])
    elif cfg.rope_type == "video_rope":
        hw, t = cfg.video_rope_section
        row = torch.cat([torch.arange(hw) % 2 + 1, torch.zeros(t, dtype=torch.long)])
    else:
        raise ValueError(f"unknown rope type {cfg.rope_type!r}")
    if row.numel() != n_pairs:
        raise ValueError(f"rope sections cover {row.numel()} frequency pairs, head_dim/2 is {n_pairs}")
    row = row.to(freqs.device)
    freqs = freqs.gather(0, row.view(1, 1, 1, -1).expand(1, *freqs.shape[1:])).squeeze(0)  # [B, T, d/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [B, T, d]
    return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)  # [B, 1, T, d]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


def causal_mask(t_new: int, t_all: int, device: torch.device | str) -> torch.Tensor:
    """Bool ``[T, S]``: new token i (at absolute index S-T+i) sees keys 0..S-T+i."""
    return torch.ones(t_new, t_all, dtype=torch.bool, device=device).tril(diagonal=t_all - t_new)


def init_weights(module: nn.Module, std: float) -> None:
    """Normal(0, std) for linear/embedding/conv/router weights, zeros for biases, defaults for norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding | nn.Conv1d | nn.Conv3d | Router):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters"):  # RMSNorm / LayerNorm of any part: weight 1, bias 0
            m.reset_parameters()


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def active_params(cfg: LLMConfig) -> int:
    """Parameters touched per token: everything except the experts that are not selected.

    Embedding lookup reads one row, but by the usual convention (Ling's "2.75B active") the embedding
    and lm_head matrices both count.
    """
    D, L = cfg.hidden_size, cfg.num_hidden_layers
    qkv = D * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
    dense = cfg.num_attention_heads * cfg.head_dim * D
    routers = cfg.num_experts * D  # one router per token, whichever modality it is
    expert = 3 * D * cfg.moe_intermediate_size
    per_layer = qkv + dense + 2 * D + routers + expert * (cfg.num_experts_per_tok + cfg.num_shared_experts)
    return L * per_layer + 2 * cfg.vocab_size * D + D
