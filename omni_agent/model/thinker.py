"""The thinker: BailingMoe LLM + Qwen2.5-VL vision encoder + Whisper audio encoder + projectors.

Module names follow Ming's ``BailingMMNativeForConditionalGeneration`` so that a state dict maps
one to one onto the released checkpoint: ``model`` (the causal LM), ``vision``, ``audio``,
``linear_proj`` (vision projector) and ``linear_proj_audio`` (audio projector).

Shape legend: B batch, T tokens, D LLM width, V vocabulary, P image patches, F mel frames,
N media tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from audio.encoder import WhisperEncoder, sinusoids
from omni_agent.model.bailing_moe import BailingMoeForCausalLM, KVCache, init_weights
from omni_agent.model.checkpoint import load_thinker, save_thinker
from omni_agent.model.config import ThinkerConfig
from omni_agent.model.errors import PlaceholderMismatchError
from omni_agent.model.fit import check_fits, module_bytes
from vision.encoder import VisionTransformer

if TYPE_CHECKING:
    from omni_agent.model.processor import ProcessedPrompt


@dataclass
class ThinkerOutput:
    logits: torch.Tensor
    """``[B, T, V]`` next-token logits."""
    hidden: torch.Tensor
    """``[B, T, D]`` last hidden state after the final norm."""


class DynamicCache:
    """The simple concatenating KV cache: one (k, v) pair per layer, every row the same length."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` ``[B, K, T, d]`` to layer ``layer_idx``; return the layer's full ``[B, K, S, d]``."""
        if layer_idx == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=2)
        return self.keys[layer_idx], self.values[layer_idx]

    @property
    def seq_len(self) -> int:
        """Tokens cached so far (0 when empty)."""
        return self.keys[0].shape[2] if self.keys else 0

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` positions (e.g. to reuse a shared prefix)."""
        self.keys = [k[:, :, :length] for k in self.keys]
        self.values = [v[:, :, :length] for v in self.values]


class Transpose(nn.Module):
    """``x.transpose(a, b)`` as a module, so the audio projector is one Sequential as in Ming."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.a, self.b)


class Thinker(nn.Module):
    """The omni model's understanding half: media encoders feeding a MoE LLM."""

    def __init__(self, config: ThinkerConfig) -> None:
        super().__init__()
        self.config = config
        D = config.llm.hidden_size
        self.model = BailingMoeForCausalLM(config.llm)
        self.vision = VisionTransformer(config.vision)
        self.audio = WhisperEncoder(config.audio)
        proj: list[nn.Module] = [nn.Linear(self.vision.image_emb_dim, D)]
        for _ in range(1, config.mlp_depth):
            proj += [nn.GELU(), nn.Linear(D, D)]
        self.linear_proj = nn.Sequential(*proj)
        a = config.audio
        proj_a: list[nn.Module] = [
            nn.Conv1d(self.audio.audio_emb_dim, D, kernel_size=a.ds_kernel_size, stride=a.ds_stride,
                      padding=a.ds_kernel_size // 2),
            Transpose(-1, -2),
        ]
        for _ in range(1, config.mlp_depth):
            proj_a += [nn.GELU(), nn.Linear(D, D)]
        proj_a.append(Transpose(-1, -2))
        self.linear_proj_audio = nn.Sequential(*proj_a)

    # ----------------------------------------------------------------------------- construction
    @property
    def hidden_size(self) -> int:
        return self.config.llm.hidden_size

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    @classmethod
    def from_preset(cls, name: str, *, seed: int = 0, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> Thinker:
        """Build a preset with seeded random weights (``device="meta"`` builds shapes only).

        Raises:
            ValueError: unknown preset.
        """
        return cls.from_config(ThinkerConfig.preset(name), seed=seed, device=device, dtype=dtype)

    @classmethod
    def from_config(cls, config: ThinkerConfig, *, seed: int = 0, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> Thinker:
        """Build from a config with seeded random weights, initialised directly on ``device``.

        Raises:
            omni_agent.model.fit.DoesNotFitError: the weights do not fit in the device's free memory.
        """
        device = torch.device(device)
        if device.type == "meta":
            with torch.device("meta"):
                return cls(config).to(dtype)
        with torch.device("meta"):
            thinker = cls(config).to(dtype)
        check_fits(f"the {config.name} thinker in {str(dtype).removeprefix('torch.')}", module_bytes(thinker),
                   device)
        # Storage is allocated once, in the target dtype, on the target device (no fp32 copy of a 16.8B model).
        thinker = thinker.to_empty(device=device)
        gen = torch.random.get_rng_state()
        cuda_gen = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
        torch.manual_seed(seed)
        try:
            with torch.no_grad():
                init_weights(thinker, config.llm.initializer_range)
        finally:
            torch.random.set_rng_state(gen)
            if cuda_gen is not None:
                torch.cuda.set_rng_state_all(cuda_gen)
        thinker.reset_buffers()
        if config.llm.norm_head:
            thinker.model.normalize_head()
        return thinker.eval()

    def reset_buffers(self) -> None:
        """Recompute Whisper's fixed positional table (the only derived buffer) on the current device."""
        dev = self.model.lm_head.weight.device
        cfg = self.config
        pe = self.audio.positional_embedding
        self.audio.positional_embedding = sinusoids(cfg.audio.n_ctx, cfg.audio.n_state).to(dev, pe.dtype)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> Thinker:
        """Load a checkpoint folder in Ming's layout (config.json + safetensors, single or sharded).

        Raises:
            omni_agent.model.checkpoint.CheckpointError: missing files or weights (named in the message).
        """
        return load_thinker(cls, path, device=device, dtype=dtype)

    def save_pretrained(self, path: str | Path, *, max_shard_bytes: int | None = None,
                        tokenizer_json: str | Path | None = None) -> None:
        """Write config.json, safetensors (sharded past ``max_shard_bytes``) and tokenizer.json."""
        save_thinker(self, path, max_shard_bytes=max_shard_bytes, tokenizer_json=tokenizer_json)

    # ----------------------------------------------------------------------------- encoders
    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Patches ``[P, 1176]`` of one or more images/videos -> L2-normalised tokens ``[N, D]`` (item order)."""
        x = self.vision(pixel_values.to(self.device), grid_thw)  # [N, 8192]
        x = self.linear_proj(x.to(self.dtype))  # [N, D]
        return F.normalize(x.float(), dim=-1).to(self.dtype)

    @torch.no_grad()
    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[128, F]`` -> L2-normalised 25 Hz tokens ``[N, D]``."""
        x = self.audio(mel.to(self.device)[None])  # [1, T, C] at 50 Hz
        x = self.linear_proj_audio(x.transpose(1, 2).to(self.dtype))  # [1, D, N] at 25 Hz
        x = x[0].transpose(0, 1)  # [N, D]
        if self.config.audio.norm_query_embeds:
            x = F.normalize(x.float(), dim=-1).to(self.dtype)
        return x

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[..., D]``."""
        return self.model.model.word_embeddings(input_ids.to(self.device))

    @torch.no_grad()
    def embed(self, prompt: ProcessedPrompt, mm_embeds: list[torch.Tensor | None] | None = None,
              start: int = 0, end: int | None = None) -> torch.Tensor:
        """Token embeddings ``[end - start, D]`` of prompt positions ``[start, end)`` (default: all), with
        each placeholder run replaced by its media embedding.

        Media embeddings are computed with the encoders when ``mm_embeds`` is None, else taken from the
        list (one tensor ``[length, D]`` per item of ``prompt.mm_items``, in order; items outside the
        window are never read and may be None). Only items that overlap the window are encoded.

        Raises:
            PlaceholderMismatchError: an item's placeholder run and its embedding differ in length.
        """
        end = len(prompt.input_ids) if end is None else end
        x = self.embed_tokens(prompt.input_ids[start:end]).clone()  # [n, D]
        if mm_embeds is not None and len(mm_embeds) != len(prompt.mm_items):
            raise PlaceholderMismatchError(
                f"prompt has {len(prompt.mm_items)} media items but {len(mm_embeds)} embeddings were given")
        for i, item in enumerate(prompt.mm_items):
            lo, hi = max(item.offset, start), min(item.offset + item.length, end)
            if lo >= hi:  # outside the window
                continue
            emb = mm_embeds[i] if mm_embeds is not None else self.encode_item(item)
            if emb is None or emb.shape[0] != item.length:
                rows = "no" if emb is None else emb.shape[0]
                raise PlaceholderMismatchError(
                    f"{item.kind} item {i} has {item.length} placeholder tokens at offset {item.offset} but its "
                    f"embedding has {rows} rows")
            x[lo - start:hi - start] = emb[lo - item.offset:hi - item.offset].to(x.device, x.dtype)
        return x

    def encode_item(self, item: object) -> torch.Tensor:
        """Encoder output for one ``MMItem`` (image/video through the ViT, audio through Whisper)."""
        kind = getattr(item, "kind", None)
        if kind in ("image", "video"):
            return self.encode_images(item.pixel_values, item.grid_thw)  # type: ignore[attr-defined]
        if kind == "audio":
            return self.encode_audio(item.mel)  # type: ignore[attr-defined]
        raise ValueError(f"unknown media kind {kind!r}")

    # ----------------------------------------------------------------------------- LLM
    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, modality_ids: torch.Tensor | None = None,
                cache: KVCache | None = None, attn_mask: torch.Tensor | None = None) -> ThinkerOutput:
        """Run the LLM on embeddings ``[B, T, D]`` with MRoPE positions ``[3, B, T]``.

        ``modality_ids`` ``[B, T]`` picks the router per token (0 text ``gate``, 1 image/video
        ``image_gate``, 2 audio ``audio_gate``; None means all text). ``cache`` receives this step's
        keys/values. ``attn_mask`` is bool ``[B, 1, T, S]`` (True = attend) or None for causal attention
        over cache + new tokens.
        """
        dev = self.device
        logits, hidden = self.model(
            inputs_embeds.to(dev, self.dtype), position_ids.to(dev),
            None if modality_ids is None else modality_ids.to(dev), cache,
            None if attn_mask is None else attn_mask.to(dev),
        )
        return ThinkerOutput(logits=logits, hidden=hidden)


def param_counts(thinker: Thinker) -> dict[str, int]:
    """Exact parameter counts: LLM, vision encoder (+ projector), audio encoder (+ projector), whole."""
    from omni_agent.model.bailing_moe import active_params, count_params

    return {
        "llm": count_params(thinker.model),
        "llm_active": active_params(thinker.config.llm),
        "vision": count_params(thinker.vision),
        "vision_projector": count_params(thinker.linear_proj),
        "audio": count_params(thinker.audio),
        "audio_projector": count_params(thinker.linear_proj_audio),
        "total": count_params(thinker),
    }
