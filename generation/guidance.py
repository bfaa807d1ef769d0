"""Classifier-free guidance with two scales (text, image), all branches in one batched DiT call.

Branches (what each transformer input carries):

| branch   | text condition      | reference latents |
| -------- | ------------------- | ----------------- |
| ``uncond`` | zeros (Ming's negative) | zeros         |
| ``image``  | zeros               | the reference     |
| ``text``   | the condition       | zeros             |
| ``full``   | the condition       | the reference     |

Modes (``mode`` argument; 1 is the default and the one Ming-Lite-Omni 1.5 ships with
``image_gen_cfg_mode=1``):

- **1, InstructPix2Pix chain**: ``v = v_u + s_img*(v_img - v_u) + s_txt*(v_full - v_img)``. With
  ``s_img == 1`` the ``v_u`` terms cancel exactly, so only ``image`` and ``full`` run (two branches);
  the third, unconditional branch is added only when ``s_img != 1`` (in practice ``s_img > 1``).
- **2, text-first chain**: ``v = v_u + s_txt*(v_txt - v_u) + s_img*(v_full - v_txt)``: the other
  ordering of the same chain (InstructPix2Pix appendix); needs ``uncond``, ``text``, ``full``.
- **0, joint**: ``v = v_u + s_txt*(v_full - v_u)``: one scale, both conditions dropped together.

Without a reference image (text-to-image) every mode reduces to ordinary CFG,
``v = v_u + s_txt*(v_full - v_u)`` with two branches (one when ``s_txt == 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Branch = Literal["uncond", "image", "text", "full"]
GUIDANCE_MODES = (0, 1, 2)


@dataclass(frozen=True)
class GuidancePlan:
    """Which branches one denoising step runs, in batch order, and how to combine them."""

    branches: tuple[Branch, ...]
    mode: int
    s_txt: float
    s_img: float
    edit: bool

    def combine(self, preds: Sequence[torch.Tensor]) -> torch.Tensor:
        """Combine per-branch velocities (same order as ``branches``) into the guided velocity."""
        v = dict(zip(self.branches, preds, strict=True))
        s_txt, s_img = self.s_txt, self.s_img
        if len(self.branches) == 1:
            return v[self.branches[0]]
        if not self.edit or self.mode == 0:
            return v["uncond"] + s_txt * (v["full"] - v["uncond"])
        if self.mode == 1:
            base = v["image"] if "uncond" not in v else v["uncond"] + s_img * (v["image"] - v["uncond"])
            return base + s_txt * (v["full"] - v["image"])
        return v["uncond"] + s_txt * (v["text"] - v["uncond"]) + s_img * (v["full"] - v["text"])


def plan_guidance(*, edit: bool, s_txt: float, s_img: float, mode: int = 1) -> GuidancePlan:
    """Pick the branches needed for these scales (skipping those whose terms cancel)."""
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance mode must be one of {GUIDANCE_MODES}, got {mode}")
    if not edit or mode == 0:
        branches: tuple[Branch, ...] = ("full",) if s_txt == 1.0 else ("uncond", "full")
    elif mode == 1:
        branches = ("image", "full") if s_img == 1.0 else ("uncond", "image", "full")
    else:
        branches = ("uncond", "text", "full")
    return GuidancePlan(branches=branches, mode=mode, s_txt=float(s_txt), s_img=float(s_img), edit=edit)


def branch_inputs(plan: GuidancePlan, cond: torch.Tensor, pooled: torch.Tensor,
                  ref: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack the branches' conditions along the batch: ``[K*B, ...]`` for K branches.

    Args:
        plan: The guidance plan.
        cond: ``[B, L, J]`` text-stream condition.
        pooled: ``[B, P]`` pooled condition.
        ref: ``[B, C, h, w]`` reference latents, or None for text-to-image.
    """
    conds, pools, refs = [], [], []
    for b in plan.branches:
        has_text = b in ("text", "full")
        conds.append(cond if has_text else torch.zeros_like(cond))
        pools.append(pooled if has_text else torch.zeros_like(pooled))
        if ref is not None:
            refs.append(ref if b in ("image", "full") else torch.zeros_like(ref))
    return torch.cat(conds), torch.cat(pools), (torch.cat(refs) if ref is not None else None)
