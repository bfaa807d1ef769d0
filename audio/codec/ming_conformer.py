"""The flow model's token encoder: Ming's ``UpsampleConformerEncoder`` (CosyVoice2 style), inference only.

tokens [B, N, 512] -> Linear + LayerNorm (x sqrt(512)) -> pre-lookahead convolution (sees 3 future
tokens; while streaming those come as ``context``) -> ``num_blocks`` Conformer layers -> upsample
(nearest x stride, causal conv) -> Linear + LayerNorm -> 4 Conformer layers -> LayerNorm.
Attention is relative-position multi-head attention (ESPnet's ``rel_pos_espnet`` encoding with the
``pos_bias_u``/``pos_bias_v`` terms). When ``streaming`` a static chunk mask lets each frame see its
own chunk and everything before it. Parameter names equal Ming's state dict keys.
Legend: B batch, T frames, D 512 channels, H heads, K = D // H.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from audio.codec.ming_config import EncoderConfig

_ACTIVATIONS = {"swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
LOOKAHEAD = 3  # Ming's PreLookaheadLayer(channels=512, pre_lookahead_len=3), fixed in its code
CHANNELS = 512


def chunk_mask(size: int, chunk: int, device: torch.device) -> torch.Tensor:
    """[T, T] bool: frame i sees frames j < (i // chunk + 1) * chunk."""
    pos = torch.arange(size, device=device)
    limit = (torch.div(pos, chunk, rounding_mode="trunc") + 1) * chunk
    return pos[None, :] < limit[:, None]


def rel_positions(size: int, dim: int, device: torch.device) -> torch.Tensor:
    """[1, 2T-1, D]: sinusoids of relative positions T-1 ... -(T-1) (ESPnet's new rel. encoding)."""
    pos = torch.arange(size - 1, -size, -1, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / dim))
    pe = torch.zeros(2 * size - 1, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe[None]


class LinearEmbed(nn.Module):
    """``embed.out``: Linear -> LayerNorm(1e-5), then scaled by sqrt(D) (the pos. encoding's xscale)."""

    def __init__(self, idim: int, odim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5))
        self.xscale = math.sqrt(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x) * self.xscale


class RelPositionAttention(nn.Module):
    def __init__(self, heads: int, dim: int, key_bias: bool):
        super().__init__()
        self.h, self.d_k = heads, dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim, bias=key_bias)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)  # [B, T, H, K]
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)  # [B, H, T, K]
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos).view(1, -1, self.h, self.d_k).transpose(1, 2)  # [1, H, 2T-1, K]
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))  # [B, H, T, T]
        bd = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))  # [B, H, T, 2T-1]
        # relative shift: query i, key j reads the encoding of distance i - j (column T-1-i+j)
        idx = (t - 1 - torch.arange(t, device=x.device)[:, None] + torch.arange(t, device=x.device)[None, :])
        bd = torch.gather(bd, 3, idx.expand(b, self.h, t, t))
        scores = (ac + bd) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~mask, -float("inf"))
            attn = torch.softmax(scores, dim=-1).masked_fill(~mask, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.activation = _ACTIVATIONS[activation]()
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Ming's ``ConformerEncoderLayer`` without the convolution module (``use_cnn_module: False``)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d = cfg.output_size
        self.self_attn = RelPositionAttention(cfg.attention_heads, d, cfg.key_bias)
        self.feed_forward = FeedForward(d, cfg.linear_units, cfg.activation)
        self.feed_forward_macaron = FeedForward(d, cfg.linear_units, cfg.activation) if cfg.macaron_style else None
        self.norm_ff = nn.LayerNorm(d, eps=1e-12)
        self.norm_mha = nn.LayerNorm(d, eps=1e-12)
        if cfg.macaron_style:
            self.norm_ff_macaron = nn.LayerNorm(d, eps=1e-12)
        self.ff_scale = 0.5 if cfg.macaron_style else 1.0
        self.pre = cfg.normalize_before

    def _sub(self, x: torch.Tensor, norm: nn.Module, fn, scale: float = 1.0) -> torch.Tensor:
        y = fn(norm(x) if self.pre else x)
        x = x + scale * y
        return x if self.pre else norm(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
        if self.feed_forward_macaron is not None:
            x = self._sub(x, self.norm_ff_macaron, self.feed_forward_macaron, self.ff_scale)
        x = self._sub(x, self.norm_mha, lambda h: self.self_attn(h, mask, pos))
        return self._sub(x, self.norm_ff, self.feed_forward, self.ff_scale)


class PreLookahead(nn.Module):
    """Conv over [x, next 3 tokens] (zero-padded at the end unless ``context`` gives them), then a
    causal conv, plus the input (Ming's ``PreLookaheadLayer``)."""

    def __init__(self, channels: int = CHANNELS, lookahead: int = LOOKAHEAD):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, 3)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:  # [B, T, D]
        h = x.transpose(1, 2)
        if context is not None:
            h = torch.cat([h, context.transpose(1, 2)], dim=2)
            h = F.pad(h, (0, self.lookahead - context.shape[1]))
        else:
            h = F.pad(h, (0, self.lookahead))
        h = F.leaky_relu(self.conv1(h))
        h = self.conv2(F.pad(h, (2, 0)))
        return h.transpose(1, 2) + x


class CausalUpsample(nn.Module):
    """Nearest upsampling by ``stride``, left pad ``2 * stride``, conv of width ``2 * stride + 1``."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, stride * 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, T] -> [B, D, T * stride]
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return self.conv(F.pad(x, (self.stride * 2, 0)))


class UpsampleConformerEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.output_size
        self.embed = LinearEmbed(cfg.input_size, d)
        self.pre_lookahead_layer = PreLookahead()
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_blocks))
        self.up_layer = CausalUpsample(CHANNELS, cfg.up_stride)
        self.up_embed = LinearEmbed(cfg.input_size, d)
        self.up_encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(4))
        self.after_norm = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, streaming: bool = False) -> torch.Tensor:
        """[B, N, D] token embeddings (+ [B, 3, D] lookahead tokens) -> [B, N * stride, D]."""
        cfg = self.cfg
        x = self.embed(x)
        ctx = self.embed(context) if context is not None and context.shape[1] > 0 else None
        t = x.shape[1]
        mask = chunk_mask(t, cfg.static_chunk_size, x.device) if streaming and cfg.static_chunk_size > 0 else None
        pos = rel_positions(t, x.shape[2], x.device).to(x.dtype)
        x = self.pre_lookahead_layer(x, ctx)
        for layer in self.encoders:
            x = layer(x, mask, pos)
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        x = self.up_embed(x)
        t = x.shape[1]
        chunk = cfg.static_chunk_size * cfg.up_stride
        mask = chunk_mask(t, chunk, x.device) if streaming and chunk > 0 else None
        pos = rel_positions(t, x.shape[2], x.device).to(x.dtype)
        for layer in self.up_encoders:
            x = layer(x, mask, pos)
        return self.after_norm(x) if cfg.normalize_before else x
