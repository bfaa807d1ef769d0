"""Ming's MRoPE position ids (``get_rope_index`` for ``3D``, ``get_t_scale_rope_index`` for ``video_rope``)
and the ``video_rope`` rotary embedding.

Rules (ARCHITECTURE section 4): text and audio placeholders are numbered sequentially on all three rows,
a run starting at (max id so far) + 1; an image/video block at offset s on a merged grid (T, H, W) gets
t = s + frame group, h = s + row, w = s + col (``3D``), or t = s + 2 * group with h/w centred on the
frame and riding on t (``video_rope``, where the next run starts after the largest *t*). Generated
tokens advance all rows together from ``delta = max id + 1 - prompt length``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class VisualBlock:
    """One image/video placeholder run: where it is and its patch grid before the 2x2 merge."""

    offset: int
    t: int
    h: int
    w: int


def mrope_positions(num_tokens: int, blocks: list[VisualBlock], merge: int, rope_type: str) -> tuple[torch.Tensor, int]:
    """Positions ``[3, num_tokens]`` and the decode delta for a prompt whose visual runs are ``blocks``."""
    parts: list[torch.Tensor] = []
    cursor = next_id = 0
    for b in sorted(blocks, key=lambda blk: blk.offset):
        if b.offset > cursor:  # text (and audio) before the block
            parts.append(torch.arange(next_id, next_id + b.offset - cursor).expand(3, -1))
            next_id += b.offset - cursor
        gh, gw = b.h // merge, b.w // merge
        t_idx, h_idx, w_idx = (g.reshape(-1) for g in torch.meshgrid(
            torch.arange(b.t), torch.arange(gh), torch.arange(gw), indexing="ij"))
        if rope_type == "video_rope":
            t_pos = t_idx * 2 + next_id
            block = torch.stack([t_pos, h_idx - (gh - 1) // 2 + t_pos, w_idx - (gw - 1) // 2 + t_pos])
            next_id = int(block[0].max()) + 1
        else:
            block = torch.stack([t_idx, h_idx, w_idx]) + next_id
            next_id = int(block.max()) + 1
        parts.append(block)
        cursor = b.offset + b.t * gh * gw
    if cursor < num_tokens:
        parts.append(torch.arange(next_id, next_id + num_tokens - cursor).expand(3, -1))
        next_id += num_tokens - cursor
    positions = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
    return positions.long(), next_id - num_tokens


class VideoRopeRotary(nn.Module):
    """Neox-style rotary for ``video_rope``: the first ``hw`` frequency pairs alternate rows h, w, h, w...;
    the last ``t`` pairs (the lowest frequencies) take row t. Same call signature as vLLM's rotary layers."""

    def __init__(self, head_dim: int, theta: float, section: list[int]) -> None:
        super().__init__()
        hw, t = section
        if hw + t != head_dim // 2:
            raise ValueError(f"video_rope section {section} must cover head_dim/2 = {head_dim // 2} pairs")
        self.head_dim = head_dim
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim),
                             persistent=False)
        self.register_buffer("row", torch.cat([torch.arange(hw) % 2 + 1, torch.zeros(t, dtype=torch.long)]),
                             persistent=False)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.dim() == 1:
            positions = positions.expand(3, -1)
        pos = positions.float()  # [3, N]
        freqs = pos[self.row].T * self.inv_freq  # [N, d/2]: pair i uses row[i]
        cos, sin = freqs.cos(), freqs.sin()
        return self._apply(q, cos, sin), self._apply(k, cos, sin)

    def _apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x1, x2 = x.view(shape[0], -1, self.head_dim).float().chunk(2, dim=-1)  # [N, heads, d/2] each
        c, s = cos[:, None], sin[:, None]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).reshape(shape).to(dtype)
