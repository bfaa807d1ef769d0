"""Image tools over the diffusion decoder (``generation/``): generate, edit and segment.

Each tool conditions the decoder on the thinker (``ThinkerConditioner``: the 256 query tokens' last
hidden states), runs ``OmniImagePipeline`` in a worker thread with a per-step progress callback and
the call's cancel event, and stores the result in the artifact store; the model gets a short
description with the artifact id, the client gets an ``Artifact`` event with its URL.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, Field

from omni_agent.agent.tools import Tool, ToolContext, ToolResult

SIZE_MULTIPLE = 16  # VAE factor 8 x DiT patch 2 (SD3): sides must be multiples of this


class GenerateImageArgs(BaseModel):
    """Draw a new image."""

    prompt: str = Field(description="what to draw, in detail")
    width: int = Field(512, ge=64, le=2048, multiple_of=SIZE_MULTIPLE,
                       description="pixels; Ming snaps the size to its closest ~512x512 aspect bucket")
    height: int = Field(512, ge=64, le=2048, multiple_of=SIZE_MULTIPLE, description="pixels")
    seed: int = Field(0, ge=0, description="same seed and prompt give the same image")


class EditImageArgs(BaseModel):
    """Edit an existing image (the user's or an earlier artifact)."""

    image_id: str = Field(description="id of the image to edit (an artifact or input image id)")
    instruction: str = Field(description="what to change")
    seed: int = Field(0, ge=0)


class SegmentImageArgs(BaseModel):
    """Find an object in an image and return its mask."""

    image_id: str = Field(description="id of the image to segment")
    target: str = Field(description="the object to segment, e.g. 'the dog'")


class ImageTools:
    """Diffusion-backed image tools.

    Args:
        pipeline: ``generation.pipeline.OmniImagePipeline``.
        conditioner: ``generation.conditioning.ThinkerConditioner`` (or any ``fn(prompt, image) -> [1, Q, D]``).
        artifacts: The artifact store results go to.
        steps: Denoising steps per call.
        guidance_text: Text guidance scale.
        guidance_image: Image guidance scale (edits).
    """

    def __init__(self, pipeline: Any, conditioner: Any, artifacts: Any, *, steps: int = 20,
                 guidance_text: float = 5.0, guidance_image: float = 1.0):
        self._pipeline = pipeline
        self._conditioner = conditioner
        self._factory: Any = None
        self.artifacts = artifacts
        self.steps = steps
        self.guidance_text = guidance_text
        self.guidance_image = guidance_image
        self._lock = threading.Lock()  # one diffusion run at a time: it saturates the device anyway

    @classmethod
    def build(cls, engine: Any, artifacts: Any, *, preset: str | None = None, path: str | None = None,
              steps: int = 20, seed: int = 0) -> ImageTools:
        """Pipeline from a checkpoint (``path``) or a random-weight preset, conditioned on the engine's thinker."""
        import dataclasses

        from generation.conditioning import ThinkerConditioner
        from generation.config import DiffusionConfig
        from generation.pipeline import OmniImagePipeline

        p = next(engine.thinker.parameters())
        if path:
            pipe = OmniImagePipeline.from_pretrained(path, device=p.device, dtype=p.dtype)
        else:
            # a random-weight decoder sized to read this thinker's hidden states
            config = dataclasses.replace(DiffusionConfig.preset(preset or "tiny"),
                                         llm_hidden_size=engine.thinker.hidden_size)
            pipe = OmniImagePipeline.from_config(config, seed=seed, device=p.device, dtype=p.dtype)
        return cls(pipe, ThinkerConditioner(engine.thinker, engine.processor, pipe.bridge), artifacts, steps=steps)

    @classmethod
    def lazy(cls, engine: Any, artifacts: Any, *, preset: str | None = None, path: str | None = None,
             steps: int = 20, seed: int = 0) -> ImageTools:
        """Like :meth:`build`, but the decoder is built on the first call (server start stays fast)."""
        tools = cls(None, None, artifacts, steps=steps)

        def factory() -> tuple[Any, Any]:
            built = cls.build(engine, artifacts, preset=preset, path=path, steps=steps, seed=seed)
            return built.pipeline, built.conditioner

        tools._factory = factory
        return tools

    def _ensure(self) -> None:
        if self._pipeline is None and self._factory is not None:
            self._pipeline, self._conditioner = self._factory()

    @property
    def pipeline(self) -> Any:
        self._ensure()
        return self._pipeline

    @property
    def conditioner(self) -> Any:
        self._ensure()
        return self._conditioner

    def _callback(self, ctx: ToolContext, label: str):
        def on_step(info: Any) -> None:
            ctx.progress({"step": info.step, "total": info.total, "fraction": info.step / info.total,
                          "message": f"{label}: step {info.step}/{info.total}"})
        return on_step

    def _input_image(self, image_id: str) -> Any:
        if self.artifacts is None:
            raise ValueError("no artifact store: cannot read input images")
        try:
            return self.artifacts.load_image(image_id)
        except KeyError:
            raise ValueError(f"no image with id {image_id!r}") from None

    def generate(self, args: GenerateImageArgs, ctx: ToolContext) -> ToolResult:
        with self._lock:
            cond = self.conditioner(args.prompt)
            out = self.pipeline(cond, height=args.height, width=args.width, steps=self.steps, seed=args.seed,
                                guidance_text=self.guidance_text, callback=self._callback(ctx, "generating"),
                                cancel=ctx.cancel)
        ref = self.artifacts.put_image(out.images[0], meta={"prompt": args.prompt, "seed": args.seed})
        return ToolResult({"image_id": ref.id, "width": out.width, "height": out.height,
                           "note": f"image generated in {out.seconds:.1f} s"}, artifacts=[ref])

    def edit(self, args: EditImageArgs, ctx: ToolContext) -> ToolResult:
        src = self._input_image(args.image_id)
        with self._lock:
            cond = self.conditioner(args.instruction, src)
            out = self.pipeline(cond, image=src, steps=self.steps, seed=args.seed, guidance_text=self.guidance_text,
                                guidance_image=self.guidance_image, callback=self._callback(ctx, "editing"),
                                cancel=ctx.cancel)
        ref = self.artifacts.put_image(out.images[0], meta={"instruction": args.instruction, "source": args.image_id})
        return ToolResult({"image_id": ref.id, "width": out.width, "height": out.height}, artifacts=[ref])

    def segment(self, args: SegmentImageArgs, ctx: ToolContext) -> ToolResult:
        import numpy as np

        from generation.segmentation import segmentation_instruction

        src = self._input_image(args.image_id)
        instruction = segmentation_instruction(args.target)
        with self._lock:
            cond = self.conditioner(instruction, src)
            out = self.pipeline.segment(cond, src, steps=self.steps, callback=self._callback(ctx, "segmenting"),
                                        cancel=ctx.cancel)
        mask = (out.mask.astype(np.uint8) * 255)
        ref = self.artifacts.put_image(np.stack([mask] * 3, axis=-1), kind="mask",
                                       meta={"target": args.target, "source": args.image_id})
        area = float(out.mask.mean())
        return ToolResult({"mask_id": ref.id, "area_fraction": round(area, 4)}, artifacts=[ref])

    def tools(self) -> list[Tool]:
        return [
            Tool("generate_image", "Draw an image from a text description.", GenerateImageArgs, self.generate),
            Tool("edit_image", "Edit an image (by id) following an instruction.", EditImageArgs, self.edit),
            Tool("segment_image", "Segment an object in an image (by id); returns a mask image.",
                 SegmentImageArgs, self.segment),
        ]
