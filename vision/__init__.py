"""Vision encoder (Qwen2.5-VL-style ViT), image preprocessing and video decoding/sampling."""
