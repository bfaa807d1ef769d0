"""Qwen2.5-VL-style vision transformer, as used by Ming-Lite-Omni 1.5.

Patches (14x14 pixels x 2 frames) are embedded by a Conv3d, run through blocks that attend inside
112-pixel windows (full attention, per frame group, at ``fullatt_block_indexes``) with 2-D rotary
positions, then every 2x2 group of patches is merged into one token. Parameter names match Ming's
checkpoint (``vision.patch_embed.proj``, ``vision.blocks.{i}.attn.qkv``, ``vision.merger.mlp.0``...).

Shape legend:
    P patches (sum over items of t*h*w), C patch features (in_channels*temporal*patch*patch),
    D width, H heads, d head dim, M merged tokens (P / 4), U merge unit (4), O merger output width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omni_agent.model.config import VisionConfig


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


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        k = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=k, stride=k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A Conv3d whose kernel equals its input is a matmul; do that (no 5-D reshapes).
        w = self.proj.weight.flatten(1)  # [D, C]
        return x.to(w.dtype) @ w.T  # [P, D]


class VisionAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, segments: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        P, D = x.shape
        q, k, v = self.qkv(x).view(P, 3, self.num_heads, -1).permute(1, 2, 0, 3)  # 3 x [H, P, d]
        q, k = _rotary(q, cos, sin), _rotary(k, cos, sin)
        mask = segments[:, None] == segments[None, :]  # [P, P] attend only inside the window
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [H, P, d]
        return self.proj(y.transpose(0, 1).reshape(P, D))


class VisionMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=True)
        self.up_proj = nn.Linear(dim, hidden, bias=True)
        self.down_proj = nn.Linear(hidden, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm2 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = VisionAttention(cfg.hidden_size, cfg.num_heads)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, segments: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), segments, cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.unit_dim = cfg.hidden_size * cfg.spatial_merge_size**2
        self.ln_q = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = nn.Sequential(nn.Linear(self.unit_dim, self.unit_dim), nn.GELU(),
                                 nn.Linear(self.unit_dim, cfg.out_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.unit_dim))  # [M, O]


class VisionTransformer(nn.Module):
    """The ViT: ``forward(pixel_values [P, C], grid_thw [n, 3]) -> [M, O]`` (merged tokens, item order)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg)

    @property
    def image_emb_dim(self) -> int:
        return self.cfg.out_hidden_size

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        grid_thw = grid_thw.to("cpu", torch.long)
        x = self.patch_embed(pixel_values)  # [P, D]
        cos, sin = self._rotary(grid_thw, x.device)  # [P, d]
        window_index, window_seg, frame_seg = self._windows(grid_thw)  # [M], [P], [P]
        U = self.cfg.spatial_merge_size**2
        # Reorder merge units window by window, so each window is contiguous (as Qwen2.5-VL does).
        perm = (window_index[:, None] * U + torch.arange(U)).reshape(-1).to(x.device)  # [P]
        x, cos, sin = x[perm], cos[perm], sin[perm]
        window_seg, frame_seg = window_seg.to(x.device), frame_seg[perm.cpu()].to(x.device)
        for i, blk in enumerate(self.blocks):
            seg = frame_seg if i in self.cfg.fullatt_block_indexes else window_seg
            x = blk(x, seg, cos.to(x.dtype), sin.to(x.dtype))
        merged = self.merger(x)  # [M, O] in window order
        return merged[torch.argsort(window_index).to(merged.device)]

    def _rotary(self, grid_thw: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.cfg.spatial_merge_size
        pos = []
        for t, h, w in grid_thw.tolist():
            # Patches come in merge-unit order: (h/m, w/m, m, m).
            hpos = torch.arange(h).view(h // m, m, 1, 1).expand(h // m, m, w // m, m).permute(0, 2, 1, 3)
            wpos = torch.arange(w).view(1, 1, w // m, m).expand(h // m, m, w // m, m).permute(0, 2, 1, 3)
            pos.append(torch.stack([hpos.reshape(-1), wpos.reshape(-1)], dim=-1).repeat(t, 1))  # [t*h*w, 2]
        pos_t = torch.cat(pos).to(device)  # [P, 2]
        rot = self.cfg.hidden_size // self.cfg.num_heads // 2  # half the head for rows, half for columns
        inv_freq = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, rot, 2, device=device).float() / rot))
        freqs = (pos_t[..., None].float() * inv_freq).flatten(1)  # [P, d/2]
        emb = torch.cat([freqs, freqs], dim=-1)  # [P, d]
        return emb.cos(), emb.sin()

    def _windows(self, grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Merge-unit order grouped by window, a window id per patch (in that order), a frame id per patch."""
        m, U = self.cfg.spatial_merge_size, self.cfg.spatial_merge_size**2
        win = self.cfg.window_size // m // self.cfg.patch_size  # window side in merged tokens
        index, seg, frames = [], [], []
        base, n_win, n_frame = 0, 0, 0
        for t, h, w in grid_thw.tolist():
            gh, gw = h // m, w // m
            ids = torch.arange(t * gh * gw).view(t, gh, gw)
            wy = torch.arange(gh) // win
            wx = torch.arange(gw) // win
            nwx = (gw + win - 1) // win
            nwy = (gh + win - 1) // win
            wid = (wy[:, None] * nwx + wx[None, :]).expand(gh, gw)  # [gh, gw] window per merged token
            wid = (torch.arange(t)[:, None, None] * (nwy * nwx) + wid).reshape(-1)  # [t*gh*gw]
            order = torch.argsort(wid * (t * gh * gw) + ids.reshape(-1))  # stable: by window, then raster
            index.append(ids.reshape(-1)[order] + base)
            seg.append((wid[order] + n_win).repeat_interleave(U))
            frames.append(torch.arange(t).repeat_interleave(h * w) + n_frame)
            base += t * gh * gw
            n_win += t * nwy * nwx
            n_frame += t
        return torch.cat(index), torch.cat(seg), torch.cat(frames)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin
