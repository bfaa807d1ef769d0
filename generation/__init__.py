"""Diffusion decoder: image generation, editing and segmentation conditioned on the thinker."""
