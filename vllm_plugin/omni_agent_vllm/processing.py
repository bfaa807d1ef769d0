"""vLLM multimodal processing for Ming-Lite-Omni 1.5: inputs already in Ming's layout.

The runtime (``omni_agent``) builds Ming's prompt itself (chat format, ``<image><imagePatch>xN</image>``,
``<video>...</video>``, ``<audio><audioPatch>xN</audio>``) and preprocesses each media item exactly as the
embedded engine does (smart resize + patches, sampled video frames, 128-bin log-mel). It sends token ids
plus, per modality, a dict of tensors:

| modality | fields |
| --- | --- |
| ``image`` | ``pixel_values [P, 1176]`` (items concatenated), ``image_grid_thw [n, 3]`` |
| ``video`` | ``pixel_values_videos [P, 1176]``, ``video_grid_thw [n, 3]`` |
| ``audio`` | ``audio_mel [F, 128]`` (log-mel transposed, items concatenated on frames), ``audio_num_frames [n]`` |

This processor checks that each item owns a placeholder run of the right length (a mismatch is an
error naming the item) and tells vLLM where the runs are; the model runs the encoders. Prefix caching
keys the items by the content hashes the runtime passes as ``multi_modal_uuids``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import DictEmbeddingItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)
from vllm.multimodal.processing.inputs import ProcessorInputs
from vllm.multimodal.processing.processor import PlaceholderFeaturesInfo

SPECIAL = {"image": ("<image>", "<imagePatch>", "</image>"), "video": ("<video>", "<imagePatch>", "</video>"),
           "audio": ("<audio>", "<audioPatch>", "</audio>")}
FIELDS = {"image": {"pixel_values", "image_grid_thw"}, "video": {"pixel_values_videos", "video_grid_thw"},
          "audio": {"audio_mel", "audio_num_frames"}}
MEL_HOP_PER_TOKEN = 4  # 100 Hz mel -> 50 Hz (Whisper conv2, stride 2) -> 25 Hz (projector conv, stride 2)


def item_token_counts(modality: str, data: Mapping[str, torch.Tensor], merge: int, ds_stride: int = 2) -> list[int]:
    """Placeholder tokens per item of one modality's dict."""
    if modality == "audio":
        frames = data["audio_num_frames"].reshape(-1).tolist()
        return [((int(f) - 1) // 2) // ds_stride + 1 for f in frames]  # conv k3 s2 p1 twice
    grid = data["image_grid_thw" if modality == "image" else "video_grid_thw"].reshape(-1, 3)
    return [int(n) // merge**2 for n in grid.prod(-1).tolist()]


def fields_config(data: Mapping[str, torch.Tensor], merge: int = 2) -> dict[str, MultiModalFieldConfig]:
    """How each tensor splits into items (``flat`` along dim 0 by item sizes, or one row per item)."""
    image = data.get("image_grid_thw", torch.empty(0, 3, dtype=torch.long)).reshape(-1, 3).prod(-1)
    video = data.get("video_grid_thw", torch.empty(0, 3, dtype=torch.long)).reshape(-1, 3).prod(-1)
    frames = data.get("audio_num_frames", torch.empty(0, dtype=torch.long)).reshape(-1)
    return {
        "pixel_values": MultiModalFieldConfig.flat_from_sizes("image", image),
        "image_grid_thw": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
        "pixel_values_videos": MultiModalFieldConfig.flat_from_sizes("video", video),
        "video_grid_thw": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        "audio_mel": MultiModalFieldConfig.flat_from_sizes("audio", frames),
        "audio_num_frames": MultiModalFieldConfig.batched("audio", keep_on_cpu=True),
    }


def special_token_ids(model_dir: str) -> dict[str, int]:
    """Ids of Ming's media tokens, read from the checkpoint's ``tokenizer.json``.

    Raises:
        FileNotFoundError / ValueError: no tokenizer.json, or one without Ming's special tokens.
    """
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"Ming plugin: {path} not found (the release layout ships tokenizer.json)")
    tok = Tokenizer.from_file(str(path))
    ids: dict[str, int] = {}
    for name in sorted({t for triple in SPECIAL.values() for t in triple}):
        tid = tok.token_to_id(name)
        if tid is None:
            raise ValueError(f"Ming plugin: {path} lacks Ming's special token {name!r}")
        ids[name] = tid
    return ids


class MingDataParser(MultiModalDataParser):
    """Accepts only the preprocessed dicts above (raw images/audio are preprocessed by the runtime)."""

    def _dict_items(self, modality: str, data: Any) -> DictEmbeddingItems:
        if not isinstance(data, Mapping):
            raise ValueError(f"Ming plugin: {modality} input must be a dict of preprocessed tensors with fields "
                             f"{sorted(FIELDS[modality])} (built by omni_agent's processor), got {type(data).__name__}")
        return DictEmbeddingItems(data, modality=modality, required_fields=FIELDS[modality],
                                  fields_factory=fields_config)

    def _parse_image_data(self, data: Any) -> DictEmbeddingItems:  # type: ignore[override]
        return self._dict_items("image", data)

    def _parse_video_data(self, data: Any) -> DictEmbeddingItems:  # type: ignore[override]
        return self._dict_items("video", data)

    def _parse_audio_data(self, data: Any) -> DictEmbeddingItems:  # type: ignore[override]
        return self._dict_items("audio", data)


class MingProcessingInfo(BaseProcessingInfo):
    def get_data_parser(self) -> MultiModalDataParser:
        return MingDataParser()

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None, "video": None, "audio": None}

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        cfg = self.ctx.get_hf_config()
        audio_max = cfg.audio().n_ctx // 2  # 50 Hz encoder frames -> 25 Hz tokens
        return {"image": min(1024, seq_len), "video": seq_len, "audio": min(audio_max, seq_len)}

    @cached_property
    def special_ids(self) -> dict[str, int]:
        return special_token_ids(self.ctx.model_config.model)


class MingDummyInputsBuilder(BaseDummyInputsBuilder[MingProcessingInfo]):
    """Largest items for vLLM's memory profiling, in the runtime's preprocessed form."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return ""

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any) -> dict[str, Any]:
        cfg = self.info.ctx.get_hf_config()
        v, a = cfg.vision(), cfg.audio()
        patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size**2
        side = 2 * v.spatial_merge_size * 16  # 64 x 64 patches -> 1024 tokens, Ming's largest image
        out: dict[str, Any] = {}
        if n := mm_counts.get("image", 0):
            out["image"] = {"pixel_values": torch.zeros(n * side * side, patch_dim),
                            "image_grid_thw": torch.tensor([[1, side, side]] * n)}
        if n := mm_counts.get("video", 0):
            out["video"] = {"pixel_values_videos": torch.zeros(n * 2 * side * side, patch_dim),
                            "video_grid_thw": torch.tensor([[2, side, side]] * n)}
        if n := mm_counts.get("audio", 0):
            frames = 4 * (a.n_ctx // 2) - 3
            out["audio"] = {"audio_mel": torch.zeros(n * frames, a.n_mels), "audio_num_frames": torch.tensor([frames] * n)}
        return out


class MingMultiModalProcessor(BaseMultiModalProcessor[MingProcessingInfo]):
    requires_tokenizer = False  # prompts arrive as token ids; special ids come from tokenizer.json

    def _merge(self) -> int:
        return self.info.ctx.get_hf_config().vision().spatial_merge_size

    def _get_mm_fields_config(self, hf_inputs: Any, hf_processor_mm_kwargs: Mapping[str, object]):
        return {k: v for k, v in fields_config(hf_inputs).items() if k in hf_inputs}

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, Any],
                            out_mm_kwargs: Any) -> Sequence[PromptUpdate]:
        ids, merge = self.info.special_ids, self._merge()
        updates = []
        for modality, (_, patch, _) in SPECIAL.items():
            if modality not in mm_items:
                continue
            counts = item_token_counts(modality, mm_items[modality].data, merge)
            updates.append(PromptReplacement(modality=modality, target=[ids[patch]],
                                             replacement=lambda i, c=counts, t=ids[patch]: [t] * c[i]))
        return updates

    def _apply_prompt_updates(self, token_ids: list[int], mm_prompt_updates: Any):
        """The prompt already holds every placeholder run: find the i-th ``<image>``/``<video>``/``<audio>``
        run of each modality and check its length against the item's token count."""
        ids = self.info.special_ids
        placeholders: dict[str, list[PlaceholderFeaturesInfo]] = {}
        for modality, updates in mm_prompt_updates.items():
            start, patch, _ = SPECIAL[modality]
            starts = [i for i, t in enumerate(token_ids) if t == ids[start]]
            if len(starts) < len(updates):
                raise ValueError(f"Ming plugin: prompt has {len(starts)} {start} runs for {len(updates)} {modality} items")
            found = []
            for item_idx, (pos, update) in enumerate(zip(starts, updates, strict=False)):
                want = len(update[0].content.full)  # the item's resolved replacement: its token count
                run = pos + 1
                while run < len(token_ids) and token_ids[run] == ids[patch]:
                    run += 1
                n = run - pos - 1
                if n != want:
                    raise ValueError(f"Ming plugin: {modality} item {item_idx} needs {want} {patch} tokens, "
                                     f"the prompt has {n} at offset {pos + 1}")
                found.append(PlaceholderFeaturesInfo(modality=modality, item_idx=item_idx, start_idx=pos + 1,
                                                     tokens=[ids[patch]] * n, is_embed=None))
            placeholders[modality] = found
        return token_ids, placeholders

    def get_dummy_inputs(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any) -> ProcessorInputs:
        data = self.dummy_inputs.get_dummy_mm_data(seq_len, mm_counts, mm_options)
        ids, merge, prompt = self.info.special_ids, self._merge(), []
        for modality, fields in data.items():
            start, patch, end = SPECIAL[modality]
            for n in item_token_counts(modality, fields, merge):
                prompt += [ids[start], *[ids[patch]] * n, ids[end]]
        return ProcessorInputs(prompt=prompt, mm_data_items=self.info.parse_mm_data(data, validate=False))
