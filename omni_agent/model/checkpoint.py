"""Thinker checkpoints in Ming's layout: ``config.json`` + safetensors (single file or sharded with
``model.safetensors.index.json``) + ``tokenizer.json``.

Weight names go through one declarative table, ``NAME_MAP`` (our module prefix -> checkpoint prefix).
Our module tree mirrors Ming's ``BailingMMNativeForConditionalGeneration``, so today every rule is an
identity; the table is where a renamed layout (another release, a fused-experts export) gets one line.
Checkpoint entries under ``IGNORED_PREFIXES`` belong to other parts (talker, image generation) and are
skipped silently; anything else we do not know is reported by name, as is every weight we miss.

Loading builds the model on ``meta`` and assigns tensors read straight from the files onto the
target device, so host memory is never doubled.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from omni_agent.model.config import TINY_TOKENIZER, ThinkerConfig
from omni_agent.model.fit import check_fits, module_bytes

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"

# our state-dict prefix -> Ming's checkpoint prefix (longest match wins)
NAME_MAP: dict[str, str] = {
    "model.model.word_embeddings.": "model.model.word_embeddings.",
    "model.model.layers.": "model.model.layers.",
    "model.model.norm.": "model.model.norm.",
    "model.lm_head.": "model.lm_head.",
    "vision.": "vision.",
    "audio.": "audio.",
    "linear_proj.": "linear_proj.",
    "linear_proj_audio.": "linear_proj_audio.",
}
# Checkpoint prefixes owned by other parts of the omni model (loaded elsewhere, if at all).
IGNORED_PREFIXES = ("talker.", "query_tokens_dict.", "connector.", "proj_in.", "proj_out.", "diffusion_loss.",
                    "whisper_encoder.")
# Weights we can rebuild when a checkpoint leaves them out (Whisper's fixed sinusoid table).
OPTIONAL_KEYS = frozenset({"audio.positional_embedding"})


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be loaded; the message names the files or weights."""


def _map(name: str, table: dict[str, str]) -> str | None:
    best = max((p for p in table if name.startswith(p)), key=len, default=None)
    return None if best is None else table[best] + name[len(best):]


def to_checkpoint_name(name: str) -> str:
    """Our parameter name -> the checkpoint's."""
    mapped = _map(name, NAME_MAP)
    if mapped is None:
        raise KeyError(f"no checkpoint name rule for {name!r}")
    return mapped


def from_checkpoint_name(name: str) -> str | None:
    """Checkpoint name -> ours, or None when no rule covers it."""
    return _map(name, {v: k for k, v in NAME_MAP.items()})


# ----------------------------------------------------------------------------- save


def save_thinker(thinker: torch.nn.Module, path: str | Path, *, max_shard_bytes: int | None = None,
                 tokenizer_json: str | Path | None = None) -> None:
    """Write ``config.json``, weights (sharded when larger than ``max_shard_bytes``) and ``tokenizer.json``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg: ThinkerConfig = thinker.config  # type: ignore[assignment]
    tensors = {to_checkpoint_name(k): _own_storage(v) for k, v in thinker.state_dict().items()}
    (path / CONFIG_FILE).write_text(json.dumps(cfg.to_ming_dict(), indent=2))
    shards = _plan_shards(tensors, max_shard_bytes)
    for stale in list(path.glob("model*.safetensors")) + [path / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    else:
        weight_map: dict[str, str] = {}
        for i, names in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file({n: tensors[n] for n in names}, str(path / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in names})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        (path / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                  indent=2))
    tok = Path(tokenizer_json) if tokenizer_json else TINY_TOKENIZER
    if tok.resolve() != (path / TOKENIZER_FILE).resolve():
        shutil.copyfile(tok, path / TOKENIZER_FILE)


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with storage of its own (grouped experts are views into stacked weights,
    and safetensors refuses tensors that share memory)."""
    t = t.detach().contiguous().cpu()
    return t.clone() if t.untyped_storage().nbytes() != t.numel() * t.element_size() else t


def _plan_shards(tensors: dict[str, torch.Tensor], max_bytes: int | None) -> list[list[str]]:
    if not max_bytes:
        return [list(tensors)]
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


# ----------------------------------------------------------------------------- load


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (from the index when sharded)."""
    if (path / INDEX_FILE).is_file():
        index = json.loads((path / INDEX_FILE).read_text())
        files = sorted(set(index.get("weight_map", {}).values()))
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"{path}: index names shard files that are missing: {', '.join(missing)}")
        return [path / f for f in files]
    if (path / WEIGHTS_FILE).is_file():
        return [path / WEIGHTS_FILE]
    raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE}")


def load_thinker(model_cls: Callable[[ThinkerConfig], torch.nn.Module], path: str | Path, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None):  # noqa: ANN201
    """Build ``model_cls(config)`` (the ``Thinker``) on ``meta`` from ``config.json`` and assign the tensors.

    The class is passed in so that this module does not import ``thinker`` (which imports this one).
    ``dtype`` None keeps the stored dtype. A checkpoint too large for the device's free memory is
    refused before anything is read (``omni_agent.model.fit.DoesNotFitError``). Raises ``CheckpointError`` naming missing weights, or
    weights whose shapes differ; unknown extra weights are logged by name and skipped.
    """
    from safetensors import safe_open

    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path}: no {CONFIG_FILE}")
    cfg = ThinkerConfig.from_ming_dict(json.loads((path / CONFIG_FILE).read_text()))
    with torch.device("meta"):
        thinker = model_cls(cfg)
    expected = thinker.state_dict()
    dev = torch.device(device)
    files = weight_files(path)
    need = module_bytes(thinker, dtype) if dtype is not None else sum(f.stat().st_size for f in files)
    check_fits(f"the thinker in {path}", need, dev)
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for f in files:
        with safe_open(str(f), framework="pt", device=str(dev) if dev.type != "meta" else "cpu") as sf:
            for key in sf.keys():  # noqa: SIM118 - safe_open is not a dict
                ours = from_checkpoint_name(key)
                if ours is None or ours not in expected:
                    if not key.startswith(IGNORED_PREFIXES):
                        unexpected.append(key)
                    continue
                t = sf.get_tensor(key)
                if t.shape != expected[ours].shape:
                    raise CheckpointError(f"{f.name}: {key} has shape {tuple(t.shape)}, the config implies "
                                          f"{tuple(expected[ours].shape)}")
                state[ours] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    missing = sorted(set(expected) - set(state) - OPTIONAL_KEYS)
    if missing:
        shown = ", ".join(missing[:20]) + (f" ... (+{len(missing) - 20} more)" if len(missing) > 20 else "")
        raise CheckpointError(f"{path}: checkpoint lacks {len(missing)} weights: {shown}")
    if unexpected:
        log.warning("checkpoint %s has %d weights the thinker does not use: %s", path, len(unexpected),
                    ", ".join(unexpected[:20]))
    thinker.load_state_dict(state, strict=False, assign=True)
    _materialise_rest(thinker, set(state), dev, dtype or _first_float_dtype(state.values()))
    if cfg.llm.norm_head:
        thinker.model.normalize_head()  # type: ignore[operator]
    return thinker.eval()


def _first_float_dtype(tensors: Iterable[torch.Tensor]) -> torch.dtype:
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def _materialise_rest(thinker: torch.nn.Module, loaded: set[str], device: torch.device, dtype: torch.dtype) -> None:
    """Give the optional tensors that the checkpoint left out real storage, then rebuild their values."""
    for name in OPTIONAL_KEYS - loaded:
        mod_name, _, attr = name.rpartition(".")
        mod = thinker.get_submodule(mod_name)
        old = getattr(mod, attr)
        setattr(mod, attr, torch.empty(old.shape, device=device, dtype=dtype))
    if OPTIONAL_KEYS - loaded:
        thinker.reset_buffers()  # type: ignore[operator]
