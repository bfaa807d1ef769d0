"""Hyperparameters of the thinker: the BailingMoe LLM, the Qwen2.5-VL ViT and the Whisper audio encoder.

Plain dataclasses with two presets: ``ming-lite-omni-1.5`` (the released model's dimensions, buildable
on the ``meta`` device) and ``tiny`` (same structure, a few million parameters, for tests and CPU runs).
``ThinkerConfig.from_ming_dict`` / ``to_ming_dict`` read and write Ming's ``config.json`` layout
(``llm_config``, ``vision_config``, ``audio_config`` with a nested ``whisper_encoder_config``, ...).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from omni_agent.model.errors import ConfigError

PRESETS = ("tiny", "ming-lite-omni-1.5")
TINY_TOKENIZER = Path(__file__).resolve().parent / "assets" / "tiny_tokenizer.json"
"""The tokenizer both presets use when no checkpoint is given (Ming's special tokens, small vocabulary)."""

RopeType = Literal["3D", "video_rope"]


@dataclass
class LLMConfig:
    """BailingMoe (Ling-lite) decoder; field names follow Ming's ``llm_config``."""

    vocab_size: int = 126464
    hidden_size: int = 2048
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 600000.0
    max_position_embeddings: int = 32768
    rope_type: RopeType = "3D"
    """``3D``: Qwen2-VL MRoPE; ``video_rope``: t on the lowest frequencies, h/w interleaved."""
    mrope_section: list[int] = field(default_factory=lambda: [16, 24, 24])
    """Rotary frequency pairs given to (t, h, w) for ``3D`` (sums to head_dim / 2)."""
    video_rope_section: list[int] = field(default_factory=lambda: [48, 16])
    """For ``video_rope``: pairs for interleaved (h, w), then pairs for t (sums to head_dim / 2)."""
    num_experts: int = 64
    num_experts_per_tok: int = 6
    moe_intermediate_size: int = 1408
    num_shared_experts: int = 2
    norm_topk_prob: bool = True
    multi_gate: bool = True
    """Per-modality routers (``gate``, ``image_gate``, ``audio_gate``)."""
    use_qkv_bias: bool = False
    use_bias: bool = False
    norm_head: bool = False
    """When set, Ming normalises each lm_head column (over the vocabulary) once before inference; the
    1.5 release config has it off (and so does Ming's default)."""
    tie_word_embeddings: bool = False
    pad_token_id: int = 126081
    eos_token_id: int = 126081
    image_patch_token: int = 126346
    image_start_token: int = 126347
    video_start_token: int = 126349
    initializer_range: float = 0.006

    @property
    def active_experts(self) -> int:
        return self.num_experts_per_tok


@dataclass
class VisionConfig:
    """Qwen2.5-VL vision transformer; names follow Ming's ``vision_config``."""

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3456
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: list[int] = field(default_factory=lambda: [7, 15, 23, 31])
    out_hidden_size: int = 8192
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tokens_per_second: int = 2


@dataclass
class AudioConfig:
    """Whisper encoder plus Ming's projector knobs (``audio_config`` + ``whisper_encoder_config``)."""

    n_mels: int = 128
    n_ctx: int = 15000
    """Most 50 Hz frames the positional table covers (300 s)."""
    n_state: int = 1280
    n_head: int = 20
    n_layer: int = 32
    ds_kernel_size: int = 3
    ds_stride: int = 2
    norm_query_embeds: bool = True


@dataclass
class ThinkerConfig:
    """The whole thinker: LLM, vision encoder, audio encoder and their projectors."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    mlp_depth: int = 2
    """Projector depth: Linear(-GELU-Linear)*(depth-1) after the vision merger / audio conv."""
    name: str = "custom"
    extra: dict[str, Any] = field(default_factory=dict)
    """Top-level keys of Ming's config.json that we keep but do not use (talker_config, ...)."""

    @property
    def hidden_size(self) -> int:
        return self.llm.hidden_size

    @classmethod
    def preset(cls, name: str) -> ThinkerConfig:
        """Return a fresh config for ``"tiny"`` or ``"ming-lite-omni-1.5"``.

        Raises:
            ValueError: unknown preset name.
        """
        if name == "ming-lite-omni-1.5":
            return cls(name=name)
        if name == "tiny":
            return cls(
                name="tiny",
                llm=LLMConfig(
                    vocab_size=4096, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=32, mrope_section=[4, 6, 6], video_rope_section=[12, 4],
                    num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128, num_shared_experts=1,
                    max_position_embeddings=4096, rope_theta=10000.0,
                    # The tiny tokenizer's ids (scripts/make_tiny_tokenizer.py writes them first).
                    pad_token_id=1, eos_token_id=1, image_patch_token=6, image_start_token=7, video_start_token=9,
                    initializer_range=0.02,
                ),
                vision=VisionConfig(
                    depth=2, hidden_size=64, intermediate_size=128, num_heads=2, fullatt_block_indexes=[1],
                    out_hidden_size=256,
                ),
                audio=AudioConfig(n_mels=128, n_ctx=1500, n_state=64, n_head=2, n_layer=2),
            )
        raise ValueError(f"unknown thinker preset {name!r} (known: {', '.join(PRESETS)})")

    # ----------------------------------------------------------------------------- Ming's config.json
    def to_ming_dict(self) -> dict[str, Any]:
        """Ming's ``config.json`` layout (``llm_config``, ``vision_config``, ``audio_config``, ...)."""
        llm = asdict(self.llm)
        rope_type = llm.pop("rope_type")
        # Ming's rope_scaling names the variant; both section lists stay as plain keys.
        llm["rope_scaling"] = {"type": rope_type, "factor": None}
        if rope_type == "3D":
            llm["rope_scaling"]["mrope_section"] = list(llm["mrope_section"])
        llm.update(model_type="bailing_moe", architectures=["BailingMoeForCausalLM"], hidden_act="silu",
                   first_k_dense_replace=0)
        vision = asdict(self.vision)
        vision.update(model_type="qwen2_5_vit", architectures=["Qwen2_5_VisionTransformer"], hidden_act="silu",
                      in_chans=self.vision.in_channels)
        a = self.audio
        audio = {
            "ds_kernel_size": a.ds_kernel_size, "ds_stride": a.ds_stride, "norm_query_embeds": a.norm_query_embeds,
            "whisper_encoder_config": {"n_ctx": a.n_ctx, "n_head": a.n_head, "n_layer": a.n_layer,
                                       "n_mels": a.n_mels, "n_state": a.n_state},
        }
        out: dict[str, Any] = copy.deepcopy(self.extra)
        out.update(
            architectures=["BailingMMNativeForConditionalGeneration"], model_type="bailingmm",
            mlp_depth=self.mlp_depth, llm_config=llm, vision_config=vision, audio_config=audio,
            omni_agent_preset=self.name,
        )
        # The GitHub config.json repeats the Whisper settings here (Ming itself reads audio_config).
        out.setdefault("whisper_config", {"ds_kernel_size": a.ds_kernel_size, "ds_stride": a.ds_stride,
                                          "whisper_encoder_config": dict(audio["whisper_encoder_config"])})
        out.setdefault("talker_config", None)
        return out

    @classmethod
    def from_ming_dict(cls, d: dict[str, Any]) -> ThinkerConfig:
        """Build from Ming's ``config.json`` contents; unknown keys are ignored, missing ones take Ming's defaults.

        Accepted shapes (all seen in Ming's releases): ``rope_scaling.type`` ``3D`` (MRoPE sections from
        ``rope_scaling.mrope_section`` or ``mrope_section``, else Ming's hard-coded [16, 24, 24]) or
        ``video_rope`` (``rope_scaling.mrope_section`` ignored, as Ming's attention ignores it; the split
        comes from ``video_rope_section``); Whisper sizes under ``audio_config.whisper_encoder_config``
        (Hugging Face layout) or ``whisper_config.whisper_encoder_config`` (GitHub layout, whose
        ``audio_config`` describes an unused SANM encoder) or flat under ``whisper_config``; ``norm_head``
        absent means False (Ming's default).

        Raises:
            ConfigError: a config this runtime cannot serve (another rope type, dense layers, tied
                embeddings, sections that do not fit the head size, no Whisper settings).
        """
        if not isinstance(d.get("llm_config"), dict):
            raise ConfigError("config.json has no llm_config object")
        llm_d = dict(d["llm_config"])
        rope = llm_d.pop("rope_scaling", None)
        if not isinstance(rope, dict) or rope.get("type") not in ("3D", "video_rope"):
            got = rope.get("type") if isinstance(rope, dict) else rope
            raise ConfigError(f"llm_config.rope_scaling.type is {got!r}; only Ming's multimodal rope '3D' or "
                              "'video_rope' can be served")
        for key, ok, why in (("first_k_dense_replace", 0, "dense MLP layers are not implemented"),
                             ("tie_word_embeddings", False, "a tied lm_head is not implemented")):
            if llm_d.get(key, ok) not in (ok, None):
                raise ConfigError(f"llm_config.{key} is {llm_d[key]!r}: {why}")
        llm_kwargs = _pick(LLMConfig, llm_d)
        llm_kwargs["rope_type"] = rope["type"]
        llm_kwargs.setdefault("norm_head", False)
        if rope["type"] == "3D" and rope.get("mrope_section"):
            llm_kwargs["mrope_section"] = list(rope["mrope_section"])
        if llm_d.get("head_dim") is None and "hidden_size" in llm_d:
            llm_kwargs["head_dim"] = llm_d["hidden_size"] // llm_d.get("num_attention_heads", 16)
        llm = LLMConfig(**llm_kwargs)
        section = llm.mrope_section if llm.rope_type == "3D" else llm.video_rope_section
        if sum(section) * 2 != llm.head_dim:
            name = "mrope_section" if llm.rope_type == "3D" else "video_rope_section"
            raise ConfigError(f"llm_config {name} {section} covers {sum(section) * 2} of head_dim {llm.head_dim}")
        vis_d = dict(d.get("vision_config") or {})
        if "in_chans" in vis_d and "in_channels" not in vis_d:
            vis_d["in_channels"] = vis_d["in_chans"]
        known = {"llm_config", "vision_config", "audio_config", "whisper_config", "mlp_depth",
                 "architectures", "model_type", "omni_agent_preset"}
        return cls(
            llm=llm,
            vision=VisionConfig(**_pick(VisionConfig, vis_d)),
            audio=_audio_config(d),
            mlp_depth=int(d.get("mlp_depth", 2)),
            name=str(d.get("omni_agent_preset", "custom")),
            extra={k: v for k, v in d.items() if k not in known and v is not None},
        )


def _audio_config(d: dict[str, Any]) -> AudioConfig:
    """The Whisper encoder and its projector from either release layout (see ``from_ming_dict``)."""
    audio = dict(d.get("audio_config") or {})
    whisper = dict(d.get("whisper_config") or {})
    if isinstance(audio.get("whisper_encoder_config"), dict):  # Hugging Face layout
        outer, sizes = audio, audio["whisper_encoder_config"]
    elif isinstance(whisper.get("whisper_encoder_config"), dict):  # GitHub layout
        outer, sizes = whisper, whisper["whisper_encoder_config"]
    elif "n_state" in whisper:  # flat whisper_config (older omni-agent exports)
        outer, sizes = audio, whisper
    else:
        raise ConfigError("config.json has no Whisper encoder settings (audio_config.whisper_encoder_config "
                          "or whisper_config.whisper_encoder_config)")
    missing = [k for k in ("n_mels", "n_ctx", "n_state", "n_head", "n_layer") if k not in sizes]
    if missing:
        raise ConfigError(f"whisper_encoder_config lacks {', '.join(missing)}")
    kwargs = _pick(AudioConfig, sizes)
    for key in ("ds_kernel_size", "ds_stride"):  # the projector conv sits beside the Whisper sizes
        if outer.get(key) is not None:
            kwargs[key] = int(outer[key])
    if audio.get("norm_query_embeds") is not None:
        kwargs["norm_query_embeds"] = bool(audio["norm_query_embeds"])
    return AudioConfig(**kwargs)


def _pick(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k in names and v is not None}
