"""Ming's classifier-free guidance: branches, ``cfg_mode`` 1-6, all branches in one batched DiT call.

What each branch feeds the DiT (``null`` is Ming's null condition ``c * 0``, taken BEFORE the MLP):

| branch     | text condition | reference latents                        |
| ---------- | -------------- | ---------------------------------------- |
| ``uncond`` | null           | zeros (edits) / none (text-to-image)     |
| ``image``  | null           | the reference                            |
| ``text``   | c              | zeros                                    |
| ``full``   | c              | the reference (edits) / none (t2i)       |

How Ming's SD3 pipeline (``diffusion/pipeline_stable_diffusion_3.py``) combines them, with text scale
``s_txt`` (``image_gen_cfg``) and image scale ``s_img`` (``image_gen_image_cfg``):

- text-to-image: ``v = v_uncond + s_txt * (v_full - v_uncond)`` (``cfg_mode`` is not used);
- edit with ``s_img <= 1``: image guidance is off and the mode is not used; both branches carry the
  reference: ``v = v_image + s_txt * (v_full - v_image)``;
- edit with ``s_img > 1`` (only then; not for ``s_img != 1``): Ming runs all four branches and
  combines by ``cfg_mode``:

  1. ``v_u + s_img*(v_img - v_u) + s_txt*(v_full - v_img)``  (Ming's default)
  2. ``v_u + s_img*(v_img - v_u)``
  3. ``v_txt + s_img*(v_full - v_txt)``
  4. ``v_u + s_txt*(v_txt - v_u)``
  5. ``v_img + s_txt*(v_full - v_img)``
  6. ``v_u + s_txt*(v_txt - v_u) + s_img*(v_img - v_u)``

Here only the branches a mode's formula reads are run (each batch row of the DiT is independent, so
the result is the same); all of them in one batched call. Ming's pipeline only works for
``s_txt > 1`` (at ``s_txt <= 1`` its batch sizes disagree and it fails); ``s_txt < 1`` is refused here,
and at exactly 1 the same formulas are evaluated (the text-to-image null branch then cancels and is
skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Branch = Literal["uncond", "image", "text", "full"]
GUIDANCE_MODES = (1, 2, 3, 4, 5, 6)

_MODE_BRANCHES: dict[int, tuple[Branch, ...]] = {
    1: ("uncond", "image", "full"),
    2: ("uncond", "image"),
    3: ("text", "full"),
    4: ("uncond", "text"),
    5: ("image", "full"),
    6: ("uncond", "text", "image"),
}


@dataclass(frozen=True)
class GuidancePlan:
    """Which branches one denoising step runs, in batch order, and how to combine them."""

    branches: tuple[Branch, ...]
    mode: int
    s_txt: float
    s_img: float
    edit: bool

    @property
    def image_guidance(self) -> bool:
        """Ming's ``do_img_cfg``: an edit with ``s_img > 1``."""
        return self.edit and self.s_img > 1.0

    def combine(self, preds: Sequence[torch.Tensor]) -> torch.Tensor:
        """Combine per-branch velocities (same order as ``branches``) into the guided velocity."""
        v = dict(zip(self.branches, preds, strict=True))
        g, gi = self.s_txt, self.s_img
        if not self.edit:
            return v["full"] if len(v) == 1 else v["uncond"] + g * (v["full"] - v["uncond"])
        if not self.image_guidance:
            return v["image"] + g * (v["full"] - v["image"])
        if self.mode == 1:
            return v["uncond"] + gi * (v["image"] - v["uncond"]) + g * (v["full"] - v["image"])
        if self.mode == 2:
            return v["uncond"] + gi * (v["image"] - v["uncond"])
        if self.mode == 3:
            return v["text"] + gi * (v["full"] - v["text"])
        if self.mode == 4:
            return v["uncond"] + g * (v["text"] - v["uncond"])
        if self.mode == 5:
            return v["image"] + g * (v["full"] - v["image"])
        return v["uncond"] + g * (v["text"] - v["uncond"]) + gi * (v["image"] - v["uncond"])


def plan_guidance(*, edit: bool, s_txt: float, s_img: float = 1.0, mode: int = 1) -> GuidancePlan:
    """Pick Ming's branches for these scales and mode (only those the combination reads).

    Raises:
        ValueError: ``mode`` not in 1..6, or ``s_txt < 1``.
    """
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance mode must be one of {GUIDANCE_MODES} (Ming's cfg_mode), got {mode!r}")
    if s_txt < 1.0:
        raise ValueError(f"text guidance scale must be >= 1 (Ming always runs classifier-free guidance), got {s_txt}")
    if not edit:
        branches: tuple[Branch, ...] = ("full",) if s_txt == 1.0 else ("uncond", "full")
    elif s_img <= 1.0:
        branches = ("image", "full")
    else:
        branches = _MODE_BRANCHES[mode]
    return GuidancePlan(branches=branches, mode=mode, s_txt=float(s_txt), s_img=float(s_img), edit=edit)


def branch_inputs(plan: GuidancePlan, cond: torch.Tensor, ref: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack the branches' pre-MLP conditions and reference latents along the batch: ``[K*B, ...]``.

    Args:
        plan: The guidance plan.
        cond: ``[B, Q, D]`` condition ``c`` (before the MLP); the null condition is ``c * 0``.
        ref: ``[B, C, h, w]`` reference latents, or None for text-to-image.
    """
    null = cond * 0.0  # Ming: negative_condition_embeds = condition_embeds * 0.0
    conds, refs = [], []
    for b in plan.branches:
        conds.append(cond if b in ("text", "full") else null)
        if ref is not None:
            refs.append(ref if b in ("image", "full") else torch.zeros_like(ref))
    return torch.cat(conds), (torch.cat(refs) if ref is not None else None)
