"""Strict loading of Ming's image-generation folders: every tensor accounted for, or an error naming it.

diffusers' ``ModelMixin.from_pretrained`` (0.42.1) does not fail on a checkpoint that does not fit:
tensors the model has no place for are only logged, and parameters the checkpoint lacks are left as
initialised ("Some weights ... were not initialized from the model checkpoint ... and are newly
initialized", a warning; ``ignore_mismatched_sizes=True`` would add resized ones to that list). Measured
here: the stock ``SD3Transformer2DModel`` loading Ming's ``transformer/`` drops its 59 refiner /
reference-embedding tensors, and Ming's subclass loading a stock SD3 checkpoint keeps 59 tensors of
uninitialised memory (inf/nan) -- both without an error. So the diffusers models here are built from
their ``config.json`` on the meta device and filled by ``load_state_dict(strict=True, assign=True)``
after comparing key sets; the connector goes through transformers with ``output_loading_info`` checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


class CheckpointError(ValueError):
    """A checkpoint folder/file is missing, or its tensors do not match the model exactly."""


def require_folder(root: Path, sub: str) -> Path:
    """``root/sub`` or a one-line ``CheckpointError`` saying what is missing."""
    path = root / sub
    if not path.is_dir():
        raise CheckpointError(f"{root} has no {sub}/ folder (Ming's image-generation layout needs mlp/, connector/, "
                              "transformer/, vae/, scheduler/)")
    return path


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a diffusers/transformers weight folder (single file or sharded with an index)."""
    from safetensors.torch import load_file

    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return load_file(str(folder / name))
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                if not (folder / shard).is_file():
                    raise CheckpointError(f"{index} names shard {shard}, which is missing")
                state.update(load_file(str(folder / shard)))
            return state
    raise CheckpointError(f"{folder} has no weights ({' or '.join(WEIGHT_NAMES)}, or a sharded index)")


def check_keys(expected: set[str], found: set[str], where: str) -> None:
    """Raise ``CheckpointError`` naming missing and unexpected tensors (first ten of each, with counts)."""
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {', '.join(unexpected[:10])}"
                         f"{' ...' if len(unexpected) > 10 else ''}")
        raise CheckpointError(f"{where}: tensors do not match the model ({'; '.join(parts)})")


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str, *, assign: bool = False) -> int:
    """Check key sets, then ``load_state_dict(strict=True)``; shape mismatches become ``CheckpointError``.

    Returns:
        The number of tensors loaded.
    """
    check_keys(set(model.state_dict()), set(state), where)
    try:
        model.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as e:  # size mismatches: torch names every tensor
        msg = " ".join(str(e).split())
        raise CheckpointError(f"{where}: {msg}") from None
    return len(state)


def load_diffusers_model(cls: Any, folder: Path, *, dtype: torch.dtype) -> tuple[nn.Module, int]:
    """Build ``cls`` from ``folder/config.json`` on the meta device and fill it strictly from its weights.

    Returns:
        (model on the CPU in ``dtype``, number of tensors loaded).
    """
    config = cls.load_config(str(folder))
    with torch.device("meta"):
        model = cls.from_config(config)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in read_safetensors(folder).items()}
    n = load_state_strict(model, state, f"{folder}", assign=True)
    left = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # non-persistent buffers are not in a state dict: none of these models has one
        raise CheckpointError(f"{folder}: tensors left uninitialised after loading: {left[:10]}")
    return model.eval(), n


def load_connector(folder: Path, *, dtype: torch.dtype) -> tuple[nn.Module, int]:
    """The Qwen2 connector via transformers, refusing any missing, unexpected or resized tensor."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, output_loading_info=True)
    bad = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise CheckpointError(f"{folder}: connector tensors do not match the model: {bad}")
    return model.eval(), len(model.state_dict())
