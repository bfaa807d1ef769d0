"""``BailingMMNativeForConditionalGeneration`` for vLLM: Ming-Lite-Omni 1.5's thinker from its release layout.

The LLM reuses vLLM's Bailing attention (fused ``query_key_value``, paged KV cache), ``FusedMoE`` and
``RMSNorm``; each MoE layer has Ming's three routers and picks one per token (``gate`` for text and every
generated token, ``image_gate`` for image/video patches, ``audio_gate`` for audio patches) with a
``torch.where`` over the router logits before ``FusedMoE``. Which tokens are media comes from vLLM's
``is_multimodal`` mask in ``embed_input_ids`` (so a generated token that happens to equal a patch id
still uses ``gate``, as in Ming); the mask is kept for the forward that follows. Encoders and projectors
are in ``encoders.py``; positions (``SupportsMRoPE``) in ``positions.py``; inputs in ``processing.py``.

Module and parameter names are the checkpoint's (``model.model.layers.{i}.mlp.image_gate``,
``vision.blocks.{i}.attn.qkv``, ``linear_proj_audio.0``...). Loading is strict: an unknown tensor outside
the parts other components own (talker, image generation) is an error, and vLLM reports missing ones.

Shape legend: N tokens in the batch, D hidden, E experts, M media tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_pp_group
from vllm.model_executor.layers.fused_moe import GateLinear
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.models.bailing_moe import BailingAttention, BailingMoE
from vllm.model_executor.models.interfaces import SupportsMRoPE, SupportsMultiModal
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    _merge_multimodal_embeddings,
    make_empty_intermediate_tensors_factory,
    make_layers,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from omni_agent_vllm.encoders import (
    VisionTower,
    WhisperTower,
    audio_projector,
    encode_audio,
    vision_projector,
)
from omni_agent_vllm.positions import VideoRopeRotary, VisualBlock, mrope_positions
from omni_agent_vllm.processing import (
    MingDummyInputsBuilder,
    MingMultiModalProcessor,
    MingProcessingInfo,
    special_token_ids,
)

TEXT, IMAGE, AUDIO = 0, 1, 2  # router per token: gate, image_gate, audio_gate
# Checkpoint parts served by other components (talker, image generation), skipped by this model.
OTHER_PARTS = ("talker.", "query_tokens_dict.", "connector.", "proj_in.", "proj_out.", "diffusion_loss.",
               "whisper_encoder.", "mlp.", "transformer.", "vae.")


class MingMoE(BailingMoE):
    """vLLM's Bailing MoE (routed + shared experts in one FusedMoE) with Ming's per-modality routers."""

    def __init__(self, config, quant_config, prefix: str) -> None:  # noqa: ANN001
        super().__init__(config.moe_intermediate_size, config, quant_config, True, prefix=prefix)
        self.multi_gate = bool(getattr(config, "multi_gate", True))
        if self.multi_gate:
            self.image_gate = GateLinear(self.hidden_size, self.num_experts, out_dtype=self.router_dtype,
                                         params_dtype=self.router_dtype, prefix=f"{prefix}.image_gate")
            self.audio_gate = GateLinear(self.hidden_size, self.num_experts, out_dtype=self.router_dtype,
                                         params_dtype=self.router_dtype, prefix=f"{prefix}.audio_gate")

    def forward(self, x: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        logits, _ = self.gate(x)  # [N, E]
        if self.multi_gate:
            image, _ = self.image_gate(x)
            audio, _ = self.audio_gate(x)
            m = modality[:, None]  # [N, 1]
            logits = torch.where(m == IMAGE, image, torch.where(m == AUDIO, audio, logits))
        return self.experts(hidden_states=x, router_logits=logits.to(x.dtype))


class MingDecoderLayer(nn.Module):
    def __init__(self, config, cache_config, quant_config, prefix: str) -> None:  # noqa: ANN001
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attention = BailingAttention(config, cache_config, quant_config, prefix=f"{prefix}.attention")
        if config.rope_type_ming == "video_rope":
            self.attention.rotary_emb = VideoRopeRotary(config.head_dim, config.rope_parameters["rope_theta"],
                                                        config.rope_parameters["mrope_section"])
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MingMoE(config, quant_config, prefix=f"{prefix}.mlp")

    def forward(self, x: torch.Tensor, positions: torch.Tensor, residual: torch.Tensor | None,
                modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.attention(hidden_states=x, position_ids=positions)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x, modality), residual


class MingDecoder(nn.Module):
    """``model.model.*``: word embeddings, decoder layers, final norm."""

    def __init__(self, vllm_config: VllmConfig, config, prefix: str) -> None:  # noqa: ANN001
        super().__init__()
        self.word_embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size,
                                                      prefix=f"{prefix}.word_embeddings")
        self.start_layer, self.end_layer, self.layers = make_layers(
            config.num_hidden_layers,
            lambda prefix: MingDecoderLayer(config, vllm_config.cache_config, vllm_config.quant_config, prefix),
            prefix=f"{prefix}.layers")
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.make_empty_intermediate_tensors = make_empty_intermediate_tensors_factory(
            ["hidden_states", "residual"], config.hidden_size)

    def forward(self, x: torch.Tensor | None, positions: torch.Tensor, modality: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None) -> torch.Tensor | IntermediateTensors:
        residual = None
        if not get_pp_group().is_first_rank:
            x, residual = intermediate_tensors["hidden_states"], intermediate_tensors["residual"]
        for layer in islice(self.layers, self.start_layer, self.end_layer):
            x, residual = layer(x, positions, residual, modality)
        if not get_pp_group().is_last_rank:
            return IntermediateTensors({"hidden_states": x, "residual": residual})
        x, _ = self.norm(x, residual)
        return x


class MingCausalLM(nn.Module):
    """``model.*``: the decoder plus the untied ``lm_head`` (normalised per column when ``norm_head``)."""

    def __init__(self, vllm_config: VllmConfig, config, prefix: str) -> None:  # noqa: ANN001
        super().__init__()
        self.model = MingDecoder(vllm_config, config, prefix=f"{prefix}.model")
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix=f"{prefix}.lm_head")
        self.logits_processor = LogitsProcessor(config.vocab_size)


@MULTIMODAL_REGISTRY.register_processor(MingMultiModalProcessor, info=MingProcessingInfo,
                                        dummy_inputs=MingDummyInputsBuilder)
class BailingMMNativeForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsMRoPE):
    """Ming-Lite-Omni 1.5's thinker: ViT + Whisper + projectors feeding the multi-router MoE LLM.

    Not ``SupportsPP``: later pipeline ranks do not embed, so they would not know each token's router;
    vLLM refuses ``--pipeline-parallel-size`` > 1 for this class instead of routing wrongly.
    """

    hf_to_vllm_mapper = WeightsMapper(orig_to_new_stacked={
        ".shared_experts.gate_proj": (".shared_experts.gate_up_proj", 0),
        ".shared_experts.up_proj": (".shared_experts.gate_up_proj", 1),
    })

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        return None  # prompts arrive as token ids with Ming's placeholders already expanded

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        text = config.get_text_config()
        self.config, self.text_config = config, text
        v, a = config.vision(), config.audio()
        self.merge, self.rope_type = v.spatial_merge_size, text.rope_type_ming
        self.audio_norm = bool(a.norm_query_embeds)
        with self._mark_tower_model(vllm_config, {"image", "video", "audio"}):
            self.vision = VisionTower(v)
            self.linear_proj = vision_projector(v.out_hidden_size, text.hidden_size, config.mlp_depth)
            self.audio = WhisperTower(a)
            self.linear_proj_audio = audio_projector(a, text.hidden_size, config.mlp_depth)
        with self._mark_language_model(vllm_config):
            self.model = MingCausalLM(vllm_config, text, prefix="model")
        self.make_empty_intermediate_tensors = self.model.model.make_empty_intermediate_tensors
        # Router choice of the tokens last embedded, read by the forward that follows (see module doc).
        max_tokens = vllm_config.scheduler_config.max_num_batched_tokens
        self.register_buffer("modality", torch.zeros(max_tokens, dtype=torch.long), persistent=False)
        self.audio_patch_id = special_token_ids(vllm_config.model_config.model)["<audioPatch>"]

    # ----------------------------------------------------------------------------- media
    def embed_multimodal(self, **kwargs: object) -> tuple[torch.Tensor, ...]:
        out: list[torch.Tensor] = []
        for pv_key, grid_key in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
            if kwargs.get(pv_key) is None:
                continue
            grid = _cat(kwargs[grid_key]).reshape(-1, 3).long()
            x = self.vision(_cat(kwargs[pv_key]), grid)  # [M, 8192]
            x = F.normalize(self.linear_proj(x).float(), dim=-1).to(x.dtype)  # [M, D]
            out += list(x.split((grid.prod(-1) // self.merge**2).tolist()))
        if kwargs.get("audio_mel") is not None:
            frames = _cat(kwargs["audio_num_frames"]).reshape(-1).tolist()
            for mel in _cat(kwargs["audio_mel"]).split([int(f) for f in frames]):  # [F, n_mels] each
                out.append(encode_audio(self.audio, self.linear_proj_audio, mel.T, self.audio_norm))
        return tuple(out)

    def embed_input_ids(self, input_ids: torch.Tensor, multimodal_embeddings=None, *,  # noqa: ANN001
                        is_multimodal: torch.Tensor | None = None) -> torch.Tensor:
        x = self.model.model.word_embeddings(input_ids)  # [N, D]
        n = input_ids.shape[0]
        self.modality[n:].zero_()
        if is_multimodal is None or not bool(is_multimodal.any()):
            self.modality[:n].zero_()
            return x
        audio = input_ids == self.audio_patch_id
        self.modality[:n] = torch.where(is_multimodal, torch.where(audio, AUDIO, IMAGE), TEXT)
        if multimodal_embeddings is None or len(multimodal_embeddings) == 0:
            return x
        return _merge_multimodal_embeddings(inputs_embeds=x, multimodal_embeddings=multimodal_embeddings,
                                            is_multimodal=is_multimodal)

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list) -> tuple[torch.Tensor, int]:
        blocks = []
        for f in mm_features:
            if f.modality in ("image", "video"):
                t, h, w = (int(n) for n in f.data[f"{f.modality}_grid_thw"].data.reshape(-1).tolist())
                blocks.append(VisualBlock(f.mm_position.offset, t, h, w))
        return mrope_positions(len(input_tokens), blocks, self.merge, self.rope_type)

    # ----------------------------------------------------------------------------- LLM
    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: object) -> torch.Tensor | IntermediateTensors:
        if inputs_embeds is None and get_pp_group().is_first_rank:
            inputs_embeds = self.embed_input_ids(input_ids)
        n = positions.shape[-1]
        return self.model.model(inputs_embeds, positions, self.modality[:n], intermediate_tensors)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.model.logits_processor(self.model.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        norm_head = bool(getattr(self.text_config, "norm_head", False))

        def ours() -> Iterable[tuple[str, torch.Tensor]]:
            for name, w in weights:
                if name.startswith(OTHER_PARTS):
                    continue
                if norm_head and name == "model.lm_head.weight":
                    w = F.normalize(w.float(), dim=0, eps=1e-7).to(w.dtype)  # Ming's norm_head, once at load
                yield name, w

        return AutoWeightsLoader(self).load_weights(ours(), mapper=self.hf_to_vllm_mapper)


def _cat(x: object) -> torch.Tensor:
    """A batched field arrives as one tensor or as a list of per-item tensors."""
    return torch.cat(list(x)) if isinstance(x, list | tuple) else x  # type: ignore[arg-type]
