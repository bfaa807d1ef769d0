"""Pluggable backend: run any diffusers text-to-image or edit pipeline by class name and path.

    backend = DiffusersBackend.load("OvisImagePipeline", "/models/Ovis-Image-7B", device="cuda")
    out = backend.generate("a red cube", height=1024, width=1024, steps=50, seed=0)

The pipeline's own text encoder handles the prompt (no thinker involved). Progress and cancellation
go through diffusers' ``callback_on_step_end`` and its ``interrupt`` flag; arguments a pipeline does
not take (``guidance_scale``, ``image``...) are checked against its ``__call__`` signature.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from generation.images import ImageInputError, check_size, load_image
from generation.pipeline import (
    CancelLike,
    GenerationCancelled,
    ImageOutput,
    StepCallback,
    StepInfo,
    is_cancelled,
)


class DiffusersBackend:
    """Wraps an instantiated diffusers pipeline behind the same call shape as ``OmniImagePipeline``.

    Args:
        pipe: A ``diffusers.DiffusionPipeline`` instance.
    """

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self._params = set(inspect.signature(pipe.__call__).parameters)
        vae = getattr(pipe, "vae", None)
        factor = getattr(pipe, "vae_scale_factor", None) or (
            2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8)
        patch = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "patch_size", None) or 2
        self.size_multiple = int(factor) * int(patch)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, class_name: str, path: str | Path, *, device: str = "cpu",
             dtype: torch.dtype = torch.float32, **kwargs: Any) -> DiffusersBackend:
        """Instantiate ``diffusers.<class_name>.from_pretrained(path)``.

        Raises:
            ValueError: ``class_name`` is not a diffusers pipeline class.
        """
        import diffusers

        klass = getattr(diffusers, class_name, None)
        if klass is None or not (inspect.isclass(klass) and issubclass(klass, diffusers.DiffusionPipeline)):
            raise ValueError(f"{class_name!r} is not a diffusers pipeline class")
        pipe = klass.from_pretrained(str(path), dtype=dtype, **kwargs)
        return cls(pipe.to(device))

    @property
    def supports_edit(self) -> bool:
        return "image" in self._params

    def generate(self, prompt: str, *, image: Any | None = None, height: int = 512, width: int = 512,
                 steps: int = 30, seed: int = 0, guidance_text: float = 5.0, guidance_image: float | None = None,
                 callback: StepCallback | None = None, cancel: CancelLike | None = None,
                 output_type: str = "pil", max_side: int = 4096, **extra: Any) -> ImageOutput:
        """Run the wrapped pipeline once; same result type as ``OmniImagePipeline.__call__``.

        Raises:
            ImageInputError: Bad sizes or image data, or an image given to a text-only pipeline.
            GenerationCancelled: ``cancel`` fired.
        """
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = dict(prompt=prompt, num_inference_steps=steps, output_type=output_type)
        if image is not None:
            if not self.supports_edit:
                raise ImageInputError(f"{type(self.pipe).__name__} takes no input image")
            img = load_image(image)
            kwargs["image"] = img
            height, width = img.height - img.height % self.size_multiple, img.width - img.width % self.size_multiple
        check_size(height, width, multiple=self.size_multiple, max_side=max_side)
        kwargs.update(height=height, width=width, generator=torch.Generator("cpu").manual_seed(seed))
        if "guidance_scale" in self._params:
            kwargs["guidance_scale"] = guidance_text
        if guidance_image is not None and "image_guidance_scale" in self._params:
            kwargs["image_guidance_scale"] = guidance_image
        kwargs.update(extra)
        state = {"cancelled": False}

        def on_step_end(pipe: Any, i: int, t: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
            if callback is not None:
                callback(StepInfo(i + 1, steps, float(t), cb_kwargs.get("latents"), time.perf_counter() - t0))
            if cancel is not None and is_cancelled(cancel):
                state["cancelled"] = True
                pipe._interrupt = True  # diffusers pipelines skip remaining steps when set
            return {}

        if "callback_on_step_end" in self._params:
            kwargs["callback_on_step_end"] = on_step_end
        if cancel is not None and is_cancelled(cancel):
            raise GenerationCancelled("cancelled before the first step")
        result = self.pipe(**kwargs)
        if state["cancelled"]:
            raise GenerationCancelled("cancelled during denoising")
        images = result.images if hasattr(result, "images") else result[0]
        if output_type == "np" and not isinstance(images, np.ndarray):
            images = np.stack([np.asarray(i) for i in images])
        elif output_type == "np" and images.dtype != np.uint8:
            images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        if output_type == "pil" and images and not isinstance(images[0], PIL.Image.Image):
            images = [PIL.Image.fromarray(np.asarray(i)) for i in images]
        latents = images if output_type == "latent" else torch.empty(0)
        return ImageOutput(images=None if output_type == "latent" else images, latents=latents, height=height,
                           width=width, seed=seed, branches=(), seconds=time.perf_counter() - t0)
