"""The request format the runtime sends: token ids + media tensors in one base64 safetensors blob.

``{"token_ids": [...], "tensors": "<base64 safetensors>", "uuids": {"image": [hash, ...], ...}}`` where
the blob's keys are ``"{modality}.{field}"`` (fields in ``processing.FIELDS``). The runtime writes it
with its own copy of this encoding (``omni_agent/engine/vllm_client.py``); both sides are tested together.
"""

from __future__ import annotations

import base64
from typing import Any

import torch


def decode_prompt(payload: dict[str, Any]) -> dict[str, Any]:
    """Payload -> vLLM ``TokensPrompt`` dict (``prompt_token_ids``, ``multi_modal_data``, ``multi_modal_uuids``)."""
    from safetensors.torch import load

    ids = [int(t) for t in payload["token_ids"]]
    if not ids:
        raise ValueError("token_ids is empty")
    prompt: dict[str, Any] = {"prompt_token_ids": ids}
    blob = payload.get("tensors")
    if blob:
        media: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in load(base64.b64decode(blob)).items():
            modality, _, field = key.partition(".")
            media.setdefault(modality, {})[field] = tensor
        prompt["multi_modal_data"] = media
        if payload.get("uuids"):
            prompt["multi_modal_uuids"] = {m: list(v) for m, v in payload["uuids"].items() if m in media}
    return prompt
