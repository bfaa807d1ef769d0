"""Plain-tensor stepping of the talker's Qwen2 LM, and the intra-op thread scoping it runs under.

``FastDecoder`` is the same arithmetic as ``transformers.Qwen2ForCausalLM`` (RMSNorm, rotary,
grouped-query attention, SwiGLU, the head) with a preallocated KV cache and none of the per-call
Python machinery, which costs several times the maths for a small talker. ``tests/test_ming_talker.py``
checks its logits against Ming's own talker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

SMALL_TALKER_WIDTH = 256  # at or below this width a CPU step is too small to split across threads


def step_threads(device: torch.device, width: int) -> int | None:
    """Intra-op threads for a talker step: one for a small model on CPU (its ops are microseconds
    long; a second OpenMP/MKL thread only spins against the other sessions' steps on shared cores,
    ~1.7x the CPU time per token), else leave torch's setting alone (``None``)."""
    return 1 if device.type == "cpu" and width <= SMALL_TALKER_WIDTH else None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` intra-op threads, restoring the previous count after (it is a
    per-thread OpenMP setting, but MKL's is process-wide, so it is never left changed)."""
    prev = torch.get_num_threads()
    if n is None or n == prev:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class FastDecoder:
    """One sequence through a Qwen2 causal LM with a preallocated KV cache, in plain tensor ops.

    The same arithmetic as ``Qwen2ForCausalLM`` (RMSNorm, rotary, grouped-query attention, SwiGLU),
    without its per-call Python machinery (module hooks, masks, cache objects, output classes), which
    costs several times the maths itself for the tiny talker. Returns last-position logits [V].
    """

    def __init__(self, model: Any, max_len: int):
        cfg = model.config
        self.nh, self.kvh = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.nh
        self.eps = cfg.rms_norm_eps
        self.scale = self.hd ** -0.5
        base = model.model
        w = base.embed_tokens.weight
        self.layers = [_layer_weights(layer) for layer in base.layers]
        self.norm = base.norm.weight
        self.head = model.lm_head.weight
        cos, sin = base.rotary_emb(w[:1], torch.arange(max_len, device=w.device)[None])  # [1, L, hd]
        self.cos, self.sin = cos[0].to(w.dtype), sin[0].to(w.dtype)
        self.k = [w.new_zeros(self.kvh, max_len, self.hd) for _ in self.layers]
        self.v = [w.new_zeros(self.kvh, max_len, self.hd) for _ in self.layers]
        self.pos = 0

    @staticmethod
    def supports(model: Any) -> bool:
        cfg = model.config
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
        return (type(model).__name__ == "Qwen2ForCausalLM" and rope.get("rope_type", "default") == "default"
                and types == {"full_attention"} and not getattr(cfg, "use_sliding_window", False)
                and getattr(cfg, "hidden_act", "silu") == "silu")

    def _rope(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = t.shape[-1] // 2
        rot = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
        return t * cos + rot * sin

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings [S, D] at the next S positions -> logits [V] of the last one."""
        F = torch.nn.functional
        s, p0 = x.shape[0], self.pos
        p1 = p0 + s
        cos, sin = self.cos[p0:p1], self.sin[p0:p1]  # [S, hd]
        nh, kvh, hd = self.nh, self.kvh, self.hd
        d = x.shape[-1]
        for (ln1, wq, bq, wk, bk, wv, bv, wo, ln2, wg, wu, wd), kc, vc in zip(self.layers, self.k, self.v, strict=True):
            h = F.rms_norm(x, (d,), ln1, self.eps)
            q = F.linear(h, wq, bq).view(s, nh, hd).transpose(0, 1)  # [nh, S, hd]
            k = F.linear(h, wk, bk).view(s, kvh, hd).transpose(0, 1)  # [kvh, S, hd]
            kc[:, p0:p1] = self._rope(k, cos, sin)
            vc[:, p0:p1] = F.linear(h, wv, bv).view(s, kvh, hd).transpose(0, 1)
            q = self._rope(q, cos, sin)
            keys, vals = kc[:, :p1], vc[:, :p1]  # [kvh, L, hd]
            if s == 1:  # one query: grouped heads against their shared key/value head, no mask
                att = torch.softmax((q.view(kvh, nh // kvh, hd) @ keys.transpose(1, 2)) * self.scale, dim=-1)
                o = (att @ vals).reshape(1, nh * hd)
            else:  # prefill from position 0: causal
                rep = nh // kvh
                o = F.scaled_dot_product_attention(q, keys.repeat_interleave(rep, 0), vals.repeat_interleave(rep, 0),
                                                   is_causal=p0 == 0, scale=self.scale)
                o = o.transpose(0, 1).reshape(s, nh * hd)
            x = x + F.linear(o, wo)
            h = F.rms_norm(x, (d,), ln2, self.eps)
            x = x + F.linear(F.silu(F.linear(h, wg)) * F.linear(h, wu), wd)
        self.pos = p1
        return F.linear(F.rms_norm(x[-1], (d,), self.norm, self.eps), self.head)


def _layer_weights(layer: Any) -> tuple[torch.Tensor | None, ...]:
    a, m = layer.self_attn, layer.mlp
    return (layer.input_layernorm.weight, a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias,
            a.v_proj.weight, a.v_proj.bias, a.o_proj.weight, layer.post_attention_layernorm.weight,
            m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight)
