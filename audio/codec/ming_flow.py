"""Ming's causal conditional flow matching: codec tokens (+ voice prompt) -> 80-bin mel at 50 Hz.

``CausalFlow`` (Ming's ``CausalMaskedDiffWithXvec.inference``): prompt tokens and tokens are embedded
together, encoded by the upsampling Conformer, projected to 80 channels (``mu``); the prompt mel is
the condition of the first frames; the speaker x-vector is L2-normalised and projected to 80.
``decoder`` (``CausalConditionalCFM``) integrates dx/dt = v(x, mu, spk, cond, t) from fixed noise
(seed 0, ``randn(1, 80, 15000)`` drawn once, as Ming does) with 10 Euler steps on the cosine schedule
t = 1 - cos(pi/2 * s), classifier-free guidance ``(1 + r) v - r v_uncond`` (r = 0.7) with the
unconditional branch in the same batch (mu, spk and cond zeroed). The estimator (``decoder.estimator``,
Ming's ``CausalConditionalDecoder``) is a 1-D U-Net of causal ResNet blocks and transformer blocks
(diffusers-style attention, GELU feed-forward); streaming it masks attention in static chunks.
Parameter names equal Ming's state dict keys. Legend: B batch (2 with CFG), C channels, T mel frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from audio.codec.base import CodecError
from audio.codec.ming_config import EstimatorConfig, FlowConfig
from audio.codec.ming_conformer import UpsampleConformerEncoder, chunk_mask

N_MELS = 80  # Ming's solver allocates [2, 80, T] buffers
FLOW_STEPS = 10  # CausalMaskedDiffWithXvec.inference: n_timesteps=10
NOISE_FRAMES = 50 * 300  # Ming's fixed noise covers 300 s of mel


def fixed_noise() -> torch.Tensor:
    """[1, 80, 15000]: Ming's ``set_all_random_seed(0); torch.randn([1, 80, 50 * 300])``."""
    return torch.randn(1, N_MELS, NOISE_FRAMES, generator=torch.Generator().manual_seed(0), device="cpu")


class CausalConv1d(nn.Conv1d):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(cin, cout, kernel)
        self.left = kernel - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over C of a [B, C, T] tensor (Ming's Transpose / LayerNorm / Transpose)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class CausalBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        # indices 0 and 2 as in Ming's Sequential(CausalConv1d, Transpose, LayerNorm, Transpose, Mish)
        self.block = nn.Sequential(CausalConv1d(cin, cout, 3), nn.Identity(), _ChannelLayerNorm(cout),
                                   nn.Identity(), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class CausalResnet(nn.Module):
    def __init__(self, cin: int, cout: int, t_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(t_dim, cout))
        self.block1 = CausalBlock(cin, cout)
        self.block2 = CausalBlock(cout, cout)
        self.res_conv = nn.Conv1d(cin, cout, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(t)[:, :, None]
        return self.block2(h, mask) + self.res_conv(x * mask)


class Attention(nn.Module):
    """diffusers' ``Attention`` as matcha configures it: no q/k/v bias, an output projection."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # x [B, T, C], bias [B, T, T]
        b, t, _ = x.shape
        q, k, v = (f(x).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None])
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, -1))


class GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int, approximate: str):
        super().__init__()
        self.proj = nn.Linear(dim, inner)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate=self.approximate)


class TransformerBlock(nn.Module):
    """matcha's ``BasicTransformerBlock`` (self-attention + feed-forward, pre-LayerNorm)."""

    def __init__(self, dim: int, cfg: EstimatorConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, cfg.num_heads, cfg.attention_head_dim)
        self.norm3 = nn.LayerNorm(dim)
        approx = "tanh" if cfg.act_fn == "gelu-approximate" else "none"
        self.ff = nn.Module()
        self.ff.net = nn.ModuleList([GELUProj(dim, dim * 4, approx), nn.Dropout(0.0), nn.Linear(dim * 4, dim)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x), bias) + x
        h = self.norm3(x)
        for m in self.ff.net:
            h = m(h)
        return h + x


class TimestepMLP(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(t)))


class _Resample(nn.Module):
    """matcha's ``Downsample1D`` / ``Upsample1D``: a stride-2 (transposed) conv kept under ``.conv``."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def sinusoidal(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """matcha's ``SinusoidalPosEmb``: [B] -> [B, dim] (sin half, cos half)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    emb = scale * t[:, None] * freq[None]
    return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Estimator(nn.Module):
    """Ming's ``CausalConditionalDecoder`` (the vector field v)."""

    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        self.cfg = cfg
        chans = tuple(cfg.channels)
        t_dim = chans[0] * 4
        self.time_mlp = TimestepMLP(cfg.in_channels, t_dim)
        self.down_blocks, self.mid_blocks, self.up_blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        blocks = lambda c: nn.ModuleList(TransformerBlock(c, cfg) for _ in range(cfg.n_blocks))  # noqa: E731
        out_c = cfg.in_channels
        for i, c in enumerate(chans):
            in_c, out_c = out_c, c
            last = i == len(chans) - 1
            down = CausalConv1d(c, c, 3) if last else _Resample(nn.Conv1d(c, c, 3, 2, 1))
            self.down_blocks.append(nn.ModuleList([CausalResnet(in_c, c, t_dim), blocks(c), down]))
        for _ in range(cfg.num_mid_blocks):
            self.mid_blocks.append(nn.ModuleList([CausalResnet(chans[-1], out_c, t_dim), blocks(out_c)]))
        ups = chans[::-1] + (chans[0],)
        for i in range(len(ups) - 1):
            c = ups[i + 1]
            last = i == len(ups) - 2
            up = CausalConv1d(c, c, 3) if last else _Resample(nn.ConvTranspose1d(c, c, 4, 2, 1))
            self.up_blocks.append(nn.ModuleList([CausalResnet(ups[i] * 2, c, t_dim), blocks(c), up]))
        self.final_block = CausalBlock(ups[-1], ups[-1])
        self.final_proj = nn.Conv1d(ups[-1], cfg.out_channels, 1)

    def _attend(self, x: torch.Tensor, mask: torch.Tensor, blocks: nn.ModuleList, streaming: bool) -> torch.Tensor:
        x = x.transpose(1, 2)  # [B, T, C]
        keep = mask.bool().expand(-1, x.shape[1], -1)  # [B, T, T]
        if streaming and self.cfg.static_chunk_size > 0:
            keep = keep & chunk_mask(x.shape[1], self.cfg.static_chunk_size, x.device)[None]
        bias = (1.0 - keep.to(x.dtype)) * -1.0e10  # Ming's mask_to_bias
        for blk in blocks:
            x = blk(x, bias)
        return x.transpose(1, 2)

    def forward(self, x, mask, mu, t, spks, cond, streaming: bool = False) -> torch.Tensor:
        """x, mu, cond [B, 80, T]; mask [B, 1, T]; t [B]; spks [B, 80] -> velocity [B, 80, T]."""
        temb = self.time_mlp(sinusoidal(t, self.cfg.in_channels).to(t.dtype))
        x = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, x.shape[-1]), cond], dim=1)
        skips, masks = [], [mask]
        for resnet, blocks, down in self.down_blocks:
            m = masks[-1]
            x = self._attend(resnet(x, m, temb), m, blocks, streaming)
            skips.append(x)
            x = down(x * m)
            masks.append(m[:, :, ::2])
        masks = masks[:-1]
        for resnet, blocks in self.mid_blocks:
            x = self._attend(resnet(x, masks[-1], temb), masks[-1], blocks, streaming)
        for resnet, blocks, up in self.up_blocks:
            m, skip = masks.pop(), skips.pop()
            x = torch.cat([x[:, :, :skip.shape[-1]], skip], dim=1)
            x = up(self._attend(resnet(x, m, temb), m, blocks, streaming) * m)
        x = self.final_block(x, m)
        return self.final_proj(x * m) * mask


class CFM(nn.Module):
    """Ming's ``CausalConditionalCFM``: fixed-noise Euler solver with classifier-free guidance."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.estimator = Estimator(cfg.estimator)
        self.noise = fixed_noise()

    def forward(self, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, streaming: bool) -> torch.Tensor:
        """mu, cond [1, 80, T]; spks [1, 80] -> mel [1, 80, T] (float32)."""
        n = mu.shape[2]
        if n > self.noise.shape[2]:
            raise CodecError(f"{n} mel frames exceed Ming's fixed noise of {self.noise.shape[2]} frames (300 s)")
        x = self.noise[:, :, :n].to(mu.device, mu.dtype)
        span = torch.linspace(0, 1, FLOW_STEPS + 1, device=mu.device, dtype=mu.dtype)
        if self.cfg.t_scheduler == "cosine":
            span = 1 - torch.cos(span * 0.5 * torch.pi)
        zeros = torch.zeros_like
        mask = torch.ones(2, 1, n, device=mu.device, dtype=mu.dtype)
        mu_in, spks_in, cond_in = (torch.cat([a, zeros(a)]) for a in (mu, spks, cond))
        r = self.cfg.inference_cfg_rate
        t, dt = span[0:1], span[1] - span[0]
        for step in range(1, len(span)):
            v = self.estimator(torch.cat([x, x]), mask, mu_in, t.expand(2), spks_in, cond_in, streaming)
            x = x + dt * ((1.0 + r) * v[:1] - r * v[1:])
            t = t + dt
            if step < len(span) - 1:
                dt = span[step + 1] - t
        return x.float()


class CausalFlow(nn.Module):
    """Ming's ``CausalMaskedDiffWithXvec`` (inference)."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = UpsampleConformerEncoder(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.output_size, cfg.output_size)
        self.decoder = CFM(cfg)

    @torch.inference_mode()
    def inference(self, tokens: torch.Tensor, prompt_tokens: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, *, streaming: bool, finalize: bool) -> torch.Tensor:
        """tokens [1, N] (the last 3 are lookahead unless ``finalize``), prompt_tokens [1, P],
        prompt_feat [1, Tp, 80], embedding [1, 192] -> mel [1, 80, T] of the tokens only."""
        spks = self.spk_embed_affine_layer(F.normalize(embedding, dim=1))
        h = self.input_embedding(torch.clamp(torch.cat([prompt_tokens, tokens], dim=1), min=0))
        if finalize:
            h = self.encoder(h, streaming=streaming)
        else:
            la = self.cfg.pre_lookahead_len
            h = self.encoder(h[:, :-la], context=h[:, -la:], streaming=streaming)
        n_prompt = prompt_feat.shape[1]
        mu = self.encoder_proj(h).transpose(1, 2)
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt] = prompt_feat.transpose(1, 2)
        return self.decoder(mu, spks, cond, streaming)[:, :, n_prompt:]
