"""One object that turns text (and an image) into images: conditioner + decoder, built from settings.

``ImageStack`` is what the CLI and the agent's image tools use:

    stack = ImageStack.build(model_path=None)          # tiny preset, RANDOM weights
    img = stack.generate("a red cube", height=256, width=256).images[0]
    img = stack.edit(img, "make it blue").images[0]
    seg = stack.segment(img, "the cube")                 # seg.mask: HxW bool

With ``model_path`` (a Ming checkpoint folder) the thinker and the decoder load from it; a part that
does not load is an error.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from generation.conditioning import ThinkerConditioner
from generation.config import DiffusionConfig
from generation.images import load_image
from generation.pipeline import ImageOutput, OmniImagePipeline, SegmentationOutput
from generation.segmentation import MASK_COLOURS, MaskFilter, segmentation_instruction

log = logging.getLogger(__name__)


@dataclass
class ImageStack:
    """Conditioner + ``OmniImagePipeline``.

    Attributes:
        pipeline: The diffusion decoder.
        conditioner: ``ThinkerConditioner`` (the thinker's query-token states).
        random_weights: True when nothing was loaded from a checkpoint.
        description: One line for users (what runs, whether the weights are random).
    """

    pipeline: OmniImagePipeline
    conditioner: Any
    random_weights: bool
    description: str

    @classmethod
    def build(cls, model_path: str | Path | None = None, *, seed: int = 0, device: str = "cpu",
              dtype: torch.dtype = torch.float32) -> ImageStack:
        """Load from a Ming checkpoint folder, or build the tiny preset with random weights."""
        from omni_agent.model.processor import OmniProcessor
        from omni_agent.model.thinker import Thinker

        if model_path is not None:
            thinker = Thinker.from_pretrained(model_path, device=device, dtype=dtype)
            processor = OmniProcessor.from_pretrained(model_path)
            pipe = OmniImagePipeline.from_pretrained(model_path, device=device, dtype=dtype)
        else:
            thinker = Thinker.from_preset("tiny", seed=seed, device=device, dtype=dtype)
            processor = OmniProcessor.for_preset("tiny")
            cfg = dataclasses.replace(DiffusionConfig.preset("tiny"), llm_hidden_size=thinker.hidden_size)
            pipe = OmniImagePipeline.from_config(cfg, seed=seed, device=device, dtype=dtype)
        conditioner = ThinkerConditioner(thinker, processor, pipe.bridge)
        random = model_path is None
        desc = (f"decoder {'tiny preset, RANDOM weights (noise-like images, not the prompt)' if random else model_path}"
                "; conditioning: thinker query states")
        return cls(pipe, conditioner, random, desc)

    def generate(self, prompt: str, **kwargs: Any) -> ImageOutput:
        """Text-to-image; ``kwargs`` go to ``OmniImagePipeline.__call__``."""
        return self.pipeline(self.conditioner(prompt), **kwargs)

    def edit(self, image: Any, instruction: str, **kwargs: Any) -> ImageOutput:
        """Edit ``image`` following ``instruction``; the output has Ming's bucket size for the input."""
        img = load_image(image)
        return self.pipeline(self.conditioner(instruction, image=img), image=img, **kwargs)

    def segment(self, image: Any, target: str, *, colour: str = "red", mask_filter: MaskFilter | None = None,
                **kwargs: Any) -> SegmentationOutput:
        """Segment ``target`` in ``image`` with Ming's referring-segmentation edit, then difference;
        ``colour`` (the paint colour expected from trained weights) only filters the difference."""
        img = load_image(image)
        instruction = segmentation_instruction(target)
        filt = mask_filter or MaskFilter(colour=None)
        if mask_filter is None and not self.random_weights:
            filt = MaskFilter(colour=MASK_COLOURS.get(colour))  # trained weights paint the asked colour
        return self.pipeline.segment(self.conditioner(instruction, image=img), img, mask_filter=filt, **kwargs)
