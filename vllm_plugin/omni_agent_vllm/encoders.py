"""Ming-Lite-Omni 1.5's media encoders for the vLLM plugin: the Qwen2.5-VL ViT, the Whisper encoder and
their projectors (``linear_proj``, ``linear_proj_audio``), with Ming's L2 normalisation.

Plain torch modules whose parameter names are the checkpoint's (``vision.blocks.{i}.attn.qkv``,
``audio.blocks.{i}.attn.query``, ``linear_proj.0``...). vLLM's own Qwen2.5-VL tower needs torchvision,
which the CPU build cannot load, and Ming's Whisper uses openai-whisper names, so both are written here;
the plugin's tests prove them equal to the project's encoders through greedy tokens.

Shape legend: P patches, C patch features (3*2*14*14), D width, H heads, M merged tokens (P/4),
U merge unit (4), F mel frames (100 Hz), T encoder frames (50 Hz), N LLM tokens, E LLM width.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


# ----------------------------------------------------------------------------- vision (Qwen2.5-VL ViT)


class PatchEmbed(nn.Module):
    def __init__(self, v: SimpleNamespace) -> None:
        super().__init__()
        k = (v.temporal_patch_size, v.patch_size, v.patch_size)
        self.proj = nn.Conv3d(v.in_channels, v.hidden_size, kernel_size=k, stride=k, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.proj.weight.dtype) @ self.proj.weight.flatten(1).T  # kernel == input: a matmul [P, D]


class VisionBlock(nn.Module):
    def __init__(self, v: SimpleNamespace) -> None:
        super().__init__()
        D = v.hidden_size
        self.heads = v.num_heads
        self.norm1, self.norm2 = RMSNorm(D, v.rms_norm_eps), RMSNorm(D, v.rms_norm_eps)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.mlp = nn.Module()
        self.mlp.gate_proj, self.mlp.up_proj = nn.Linear(D, v.intermediate_size), nn.Linear(D, v.intermediate_size)
        self.mlp.down_proj = nn.Linear(v.intermediate_size, D)

    def forward(self, x: torch.Tensor, segment: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        P, D = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).view(P, 3, self.heads, -1).permute(1, 2, 0, 3)  # 3 x [H, P, d]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        same = segment[:, None] == segment[None, :]  # [P, P]: attention stays inside a window / frame group
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=same).transpose(0, 1).reshape(P, D)
        x = x + self.attn.proj(y)
        h = self.norm2(x)
        return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))


class VisionTower(nn.Module):
    """``forward(pixel_values [P, C], grid_thw [n, 3]) -> [M, 8192]``, merged tokens in item order."""

    def __init__(self, v: SimpleNamespace) -> None:
        super().__init__()
        self.v = v
        self.patch_embed = PatchEmbed(v)
        self.blocks = nn.ModuleList(VisionBlock(v) for _ in range(v.depth))
        unit = v.hidden_size * v.spatial_merge_size**2
        self.merger = nn.Module()
        self.merger.ln_q = RMSNorm(v.hidden_size, v.rms_norm_eps)
        self.merger.mlp = nn.Sequential(nn.Linear(unit, unit), nn.GELU(), nn.Linear(unit, v.out_hidden_size))

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        grid = [tuple(int(n) for n in row) for row in grid_thw.reshape(-1, 3).tolist()]
        x = self.patch_embed(pixel_values)  # [P, D]
        order, window_of, frame_of, cos, sin = self._layout(grid, x.device)
        U = self.v.spatial_merge_size**2
        perm = (order[:, None] * U + torch.arange(U, device=x.device)).reshape(-1)  # [P] windows contiguous
        x, cos, sin, frame_of = x[perm], cos[perm].to(x.dtype), sin[perm].to(x.dtype), frame_of[perm]
        for i, block in enumerate(self.blocks):
            x = block(x, frame_of if i in self.v.fullatt_block_indexes else window_of, cos, sin)
        merged = self.merger.mlp(self.merger.ln_q(x).view(-1, self.v.hidden_size * U))  # [M, O] window order
        return merged[torch.argsort(order)]

    def _layout(self, grid: list[tuple[int, int, int]], device: torch.device):  # noqa: ANN202
        """Merge units ordered window by window, window id and frame id per patch, 2-D rotary cos/sin."""
        m, U = self.v.spatial_merge_size, self.v.spatial_merge_size**2
        side = self.v.window_size // m // self.v.patch_size  # window side in merged tokens
        orders, windows, frames, pos = [], [], [], []
        base = n_win = n_frame = 0
        for t, h, w in grid:
            gh, gw = h // m, w // m
            nwy, nwx = -(-gh // side), -(-gw // side)
            win = (torch.arange(gh)[:, None] // side) * nwx + torch.arange(gw)[None, :] // side  # [gh, gw]
            win = (torch.arange(t)[:, None, None] * nwy * nwx + win).reshape(-1)  # [t*gh*gw]
            raster = torch.arange(t * gh * gw)
            sort = torch.argsort(win * raster.numel() + raster)
            orders.append(raster[sort] + base)
            windows.append((win[sort] + n_win).repeat_interleave(U))
            frames.append(torch.arange(t).repeat_interleave(h * w) + n_frame)
            rows = torch.arange(h).view(gh, m, 1, 1).expand(gh, m, gw, m).permute(0, 2, 1, 3).reshape(-1)
            cols = torch.arange(w).view(1, 1, gw, m).expand(gh, m, gw, m).permute(0, 2, 1, 3).reshape(-1)
            pos.append(torch.stack([rows, cols], -1).repeat(t, 1))  # [t*h*w, 2] in merge-unit order
            base, n_win, n_frame = base + t * gh * gw, n_win + t * nwy * nwx, n_frame + t
        rot = self.v.hidden_size // self.v.num_heads // 2
        inv_freq = 1.0 / (self.v.rope_theta ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
        freqs = (torch.cat(pos)[..., None].float() * inv_freq).flatten(1)  # [P, d/2]
        emb = torch.cat([freqs, freqs], -1).to(device)
        return (torch.cat(orders).to(device), torch.cat(windows).to(device), torch.cat(frames).to(device),
                emb.cos(), emb.sin())


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


# ----------------------------------------------------------------------------- audio (Whisper encoder)


class WhisperBlock(nn.Module):
    def __init__(self, D: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn = nn.Module()
        self.attn.query, self.attn.key = nn.Linear(D, D), nn.Linear(D, D, bias=False)
        self.attn.value, self.attn.out = nn.Linear(D, D), nn.Linear(D, D)
        self.attn_ln, self.mlp_ln = nn.LayerNorm(D), nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, D = x.shape
        h = self.attn_ln(x)
        q, k, v = (proj(h).view(T, self.heads, -1).transpose(0, 1)
                   for proj in (self.attn.query, self.attn.key, self.attn.value))  # [H, T, d]
        x = x + self.attn.out(F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(T, D))
        return x + self.mlp(self.mlp_ln(x))


class WhisperTower(nn.Module):
    """``forward(mel [n_mels, F]) -> [T, D]`` at 50 Hz, no 30 s padding (Ming's use of Whisper)."""

    def __init__(self, a: SimpleNamespace) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(a.n_mels, a.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(a.n_state, a.n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(a.n_ctx, a.n_state))
        self.blocks = nn.ModuleList(WhisperBlock(a.n_state, a.n_head) for _ in range(a.n_layer))
        self.ln_post = nn.LayerNorm(a.n_state)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel.to(self.conv1.weight.dtype))))).transpose(0, 1)  # [T, D]
        if x.shape[0] > self.positional_embedding.shape[0]:
            raise ValueError(f"audio too long: {x.shape[0]} encoder frames, the encoder covers "
                             f"{self.positional_embedding.shape[0]}")
        x = x + self.positional_embedding[: x.shape[0]].to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class Transpose(nn.Module):
    """Swap the last two dims (the audio projector's Sequential holds two of these, as Ming's does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-1, -2)


def vision_projector(in_dim: int, out_dim: int, depth: int) -> nn.Sequential:
    """``linear_proj``: Linear, then (GELU, Linear) * (depth - 1)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(1, depth):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def audio_projector(a: SimpleNamespace, out_dim: int, depth: int) -> nn.Sequential:
    """``linear_proj_audio``: Conv1d(k=3, s=2) 50 -> 25 Hz, Transpose, (GELU, Linear) * (depth - 1), Transpose."""
    layers: list[nn.Module] = [nn.Conv1d(a.n_state, out_dim, kernel_size=a.ds_kernel_size, stride=a.ds_stride,
                                         padding=a.ds_kernel_size // 2), Transpose()]
    for _ in range(1, depth):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers, Transpose())


def encode_audio(tower: WhisperTower, projector: nn.Sequential, mel: torch.Tensor, normalise: bool) -> torch.Tensor:
    """Log-mel ``[n_mels, F]`` -> 25 Hz LLM tokens ``[N, E]`` (L2-normalised as Ming's ``norm_query_embeds``)."""
    x = projector(tower(mel).transpose(0, 1)[None])[0].transpose(0, 1)  # [N, E]
    return F.normalize(x.float(), dim=-1).to(x.dtype) if normalise else x
