"""Diffusion decoder: image generation, editing and segmentation conditioned on the thinker."""

from __future__ import annotations

import importlib
from typing import Any

# Exported lazily so that ``import generation.segmentation`` does not pay for the pipeline's imports.
_EXPORTS = {
    "DiffusionConfig": "generation.config",
    "ImageInputError": "generation.images",
    "GenerationCancelled": "generation.pipeline",
    "ImageOutput": "generation.pipeline",
    "OmniImagePipeline": "generation.pipeline",
    "SegmentationOutput": "generation.pipeline",
    "StepInfo": "generation.pipeline",
    "ImageStack": "generation.stack",
    "ThinkerConditioner": "generation.conditioning",
    "DiffusersBackend": "generation.backends",
    "MingSD3Transformer2DModel": "generation.transformer",
    "CheckpointError": "generation.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'generation' has no attribute {name!r}")
