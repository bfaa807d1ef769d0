"""Condition the decoder on the thinker: append the query tokens to the prompt, take their states.

Prompt layout (Ming's ``append_input_ids_with_multiscale_learnable_tokens``): after the whole chat
prompt (generation prompt included) come, for each scale s in (4, 8, 16),

    <image> <imagePatch> x s*s </image>

where the ``<imagePatch>`` embeddings are replaced by ``query_tokens_dict["{s}x{s}"]``. Ming gives each
scale the position layout of an image whose merged grid is 1 x s*s (``grid_thw = [1, 2, 2*s*s]``):
with offset o, t = o, h = o, w = o + col; the start/end tokens are numbered like text. Query tokens
route through the image router (modality 1). The decoder's condition is the last hidden states of the
finest scale's s*s tokens (256 for 16x16). For an edit the thinker sees the input image at exactly
451,584 pixels (672^2 area), the min = max pixel setting Ming's ``test_infer_gen_image.py`` gives its
image processor for image generation.

Legend: T prompt tokens, S appended tokens, D thinker width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from generation.bridge import ImageGenBridge

IMAGE_START = "<image>"
IMAGE_END = "</image>"
TEXT, IMAGE = 0, 1  # modality ids (router choice) from docs/interfaces.md
GEN_INPUT_PIXELS = 451584  # Ming's test_infer_gen_image.py: image_processor.min_pixels = max_pixels = this


@dataclass
class QueryLayout:
    """The appended block: which slots are query tokens, and their positions/modalities."""

    is_query: torch.Tensor  # [S] bool
    position_ids: torch.Tensor  # [3, S]
    modality_ids: torch.Tensor  # [S]
    last_scale: slice  # slice of the appended block holding the finest scale's queries


def query_layout(scales: tuple[int, ...], start: int) -> QueryLayout:
    """Positions of ``<image> queries </image>`` per scale, starting at position id ``start``."""
    is_q, pos, mod = [], [], []
    p = start
    last = slice(0, 0)
    for s in scales:
        is_q.append(False)
        pos.append((p, p, p))
        mod.append(TEXT)
        p += 1
        first = len(is_q)
        for col in range(s * s):
            is_q.append(True)
            pos.append((p, p, p + col))
            mod.append(IMAGE)
        last = slice(first, first + s * s)
        p = p + s * s  # next id = max id so far + 1 (the w row reached p + s*s - 1)
        is_q.append(False)
        pos.append((p, p, p))
        mod.append(TEXT)
        p += 1
    return QueryLayout(
        is_query=torch.tensor(is_q),
        position_ids=torch.tensor(pos, dtype=torch.long).T.contiguous(),
        modality_ids=torch.tensor(mod, dtype=torch.long),
        last_scale=last,
    )


class ThinkerConditioner:
    """Turn a chat prompt (plus an optional image, for edits) into the decoder's condition.

    Args:
        thinker: ``omni_agent.model.thinker.Thinker`` (``embed``, ``embed_tokens``, ``forward``).
        processor: ``omni_agent.model.processor.OmniProcessor``.
        bridge: The pipeline's ``ImageGenBridge`` (it owns the learnable query tokens).
    """

    def __init__(self, thinker: Any, processor: Any, bridge: ImageGenBridge):
        self.thinker = thinker
        self.processor = processor
        self.bridge = bridge
        self.gen_processor = copy.copy(processor)  # same tokenizer; Ming's fixed image size for generation
        self.gen_processor.min_pixels = self.gen_processor.max_pixels = GEN_INPUT_PIXELS
        tok = processor.tokenizer
        self.start_id = tok.token_to_id(IMAGE_START)
        self.end_id = tok.token_to_id(IMAGE_END)
        if self.start_id is None or self.end_id is None:
            raise ValueError(f"the tokenizer has no {IMAGE_START}/{IMAGE_END} tokens")

    def messages(self, prompt: str, image: Any | None = None) -> list[dict[str, Any]]:
        """A one-turn chat: the image (for edits) and the instruction."""
        content: list[dict[str, Any]] = []
        if image is not None:
            content.append({"type": "image", "image": image})
        content.append({"type": "text", "text": prompt})
        return [{"role": "user", "content": content}]

    @torch.inference_mode()
    def __call__(self, prompt: str | list[dict[str, Any]], image: Any | None = None) -> torch.Tensor:
        """Return ``[1, Q, D]``: the thinker's last hidden states of the finest-scale query tokens.

        Args:
            prompt: Instruction text, or ready chat messages.
            image: Reference image for an edit (ignored when ``prompt`` is a message list).
        """
        msgs = self.messages(prompt, image) if isinstance(prompt, str) else prompt
        pp = self.gen_processor(msgs, add_generation_prompt=True)
        embeds = self.thinker.embed(pp)  # [T, D]
        dtype, device = embeds.dtype, embeds.device
        layout = query_layout(tuple(self.bridge.config.img_gen_scales), int(pp.position_ids.max()) + 1)
        marks = self.thinker.embed_tokens(torch.tensor([self.start_id, self.end_id], device=device))  # [2, D]
        queries = self.bridge.query_embeds().to(device, dtype)  # [sum s*s, D]
        block = []
        qi = 0
        for s in self.bridge.config.img_gen_scales:
            block += [marks[:1], queries[qi: qi + s * s], marks[1:]]
            qi += s * s
        x = torch.cat([embeds, *block])[None]  # [1, T+S, D]
        pos = torch.cat([pp.position_ids.to(device), layout.position_ids.to(device)], dim=1)[:, None]  # [3, 1, T+S]
        mod = torch.cat([pp.modality_ids.to(device), layout.modality_ids.to(device)])[None]  # [1, T+S]
        hidden = self.thinker.forward(x, pos, mod).hidden  # [1, T+S, D]
        t = embeds.shape[0]
        return hidden[:, t + layout.last_scale.start: t + layout.last_scale.stop]  # [1, Q, D]
