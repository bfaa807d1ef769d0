"""Load the talker from Ming-Lite-Omni 1.5's release layout, as Ming's ``from_pretrained`` reads it.

Where Ming keeps the parts (``BailingMMNativeForConditionalGeneration.__init__`` sets the talker's
``_name_or_path`` to ``<root>/talker``):

- ``<root>/config.json``: ``talker_config`` (``vocab_size`` 184445, ``qa_model_hidden_size``,
  ``vp_feature_size``, ``vp_kernel_size``, ``vp_stride``); the LM is resized to this vocabulary.
- ``<root>/talker/config.json``: the Qwen2 LM (Qwen2.5-0.5B shape, ``tie_word_embeddings``).
- ``<root>/talker/`` tokenizer files (``AutoTokenizer``) and ``talker/s3_bpe/{tokenizer.json,
  char_mapping.txt}``.
- the weights: in the root checkpoint (``model.safetensors.index.json`` + shards, or
  ``model.safetensors``) under the ``talker.`` prefix. With a tied head ``save_pretrained`` drops
  ``talker.model.lm_head.weight``; the head is then the embedding. When the file holds a head, it
  is loaded as its own tensor.

Loading is strict: a missing file is a one-line error naming it; missing, unexpected or misshapen
tensors are an error naming them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from audio.bpe import BPEError, CodeBPE
from audio.talker import MING_REFUSED_ID, Talker, TalkerConfig, TalkerError

log = logging.getLogger(__name__)

PREFIX = "talker."
HEAD = "model.lm_head.weight"
EMBED = "model.model.embed_tokens.weight"
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"
_TALKER_DEFAULTS = {"vocab_size": 184445, "qa_model_hidden_size": 2048, "vp_feature_size": 192,
                    "vp_kernel_size": 1, "vp_stride": 1}  # BailingTalkerConfig's defaults


def has_talker(root: str | Path) -> bool:
    """True when ``root``'s ``config.json`` declares Ming's talker (``talker_config``); loading then
    needs the rest of the layout and names what is missing."""
    try:
        cfg = json.loads((Path(root) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(cfg.get("talker_config"))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TalkerError(f"talker checkpoint file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise TalkerError(f"talker checkpoint file {path} is not valid JSON: {e}") from None


def read_config(root: Path, tokenizer_len: int) -> TalkerConfig:
    """Build the config from the root ``talker_config`` and ``talker/config.json``."""
    from transformers import Qwen2Config

    talker_cfg = _read_json(root / "config.json").get("talker_config")
    if not talker_cfg:
        raise TalkerError(f"{root / 'config.json'} has no talker_config")
    t = {**_TALKER_DEFAULTS, **{k: v for k, v in talker_cfg.items() if k in _TALKER_DEFAULTS}}
    _read_json(root / "talker" / "config.json")  # a one-line error for a missing or broken file
    q = Qwen2Config.from_pretrained(str(root / "talker"))
    rope = getattr(q, "rope_parameters", None) or {}
    unsupported = {"hidden_act": q.hidden_act != "silu", "rope type": rope.get("rope_type", "default") != "default",
                   "use_sliding_window": bool(getattr(q, "use_sliding_window", False)),
                   "head_dim": (getattr(q, "head_dim", None) or q.hidden_size // q.num_attention_heads)
                   != q.hidden_size // q.num_attention_heads}
    if any(unsupported.values()):
        bad = ", ".join(k for k, v in unsupported.items() if v)
        raise TalkerError(f"{root / 'talker' / 'config.json'}: unsupported Qwen2 settings ({bad}); "
                          "Ming's talker uses silu, default rope, full attention")
    audio = int(t["vocab_size"]) - tokenizer_len
    if audio <= 0:
        raise TalkerError(f"talker vocab_size {t['vocab_size']} is not larger than the tokenizer ({tokenizer_len})")
    return TalkerConfig(
        hidden_size=q.hidden_size, num_hidden_layers=q.num_hidden_layers, num_attention_heads=q.num_attention_heads,
        num_key_value_heads=q.num_key_value_heads, intermediate_size=q.intermediate_size,
        rope_theta=float(rope.get("rope_theta", getattr(q, "rope_theta", 1e6))), rms_norm_eps=q.rms_norm_eps,
        max_position_embeddings=q.max_position_embeddings, tie_word_embeddings=bool(q.tie_word_embeddings),
        text_vocab_size=tokenizer_len, audio_vocab_size=audio, thinker_hidden_size=int(t["qa_model_hidden_size"]),
        speaker_dim=int(t["vp_feature_size"]), vp_kernel_size=int(t["vp_kernel_size"]), vp_stride=int(t["vp_stride"]),
        refused_id=MING_REFUSED_ID,
    )


def talker_tensors(root: Path) -> dict[str, torch.Tensor]:
    """The ``talker.*`` tensors of the root checkpoint, prefix removed."""
    from safetensors import safe_open

    if (root / INDEX_FILE).is_file():
        weight_map = _read_json(root / INDEX_FILE).get("weight_map") or {}
        files = sorted({f for k, f in weight_map.items() if k.startswith(PREFIX)})
    elif (root / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise TalkerError(f"talker weights: {root} has no {INDEX_FILE} or {WEIGHTS_FILE}")
    if not files:
        raise TalkerError(f"{root / INDEX_FILE} maps no talker.* tensors")
    out: dict[str, torch.Tensor] = {}
    for name in files:
        path = root / name
        if not path.is_file():
            raise TalkerError(f"talker weight file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
                    if key.startswith(PREFIX):
                        out[key[len(PREFIX):]] = f.get_tensor(key)
        except Exception as e:  # safetensors raises its own error types for a corrupt header or body
            raise TalkerError(f"talker weight file {path} is unreadable: {type(e).__name__}: {e}") from None
    return out


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:8])
    return shown + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def load_talker(root: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Talker:
    """Ming's talker from a release checkpoint folder (the root, or its ``talker/`` folder).

    Args:
        dtype: compute dtype; default fp32 on CPU, bf16 elsewhere (Ming runs bf16 on CUDA).

    Raises:
        TalkerError: a file is missing or unreadable, or the tensors do not match the model.
    """
    from transformers import AutoTokenizer

    root = Path(root)
    if root.name == "talker" and (root.parent / "config.json").is_file():
        root = root.parent
    talker_dir = root / "talker"
    if not talker_dir.is_dir():
        raise TalkerError(f"{root} has no talker/ folder (Ming's release layout)")
    try:
        tok = AutoTokenizer.from_pretrained(str(talker_dir))
    except Exception as e:  # transformers raises OSError/ValueError/... for missing or broken files
        raise TalkerError(f"talker tokenizer in {talker_dir} does not load: {type(e).__name__}: {e}") from None
    try:
        bpe = CodeBPE.from_dir(talker_dir / "s3_bpe")
    except BPEError as e:
        raise TalkerError(f"talker s3_bpe: {e}") from None
    config = read_config(root, len(tok))
    tensors = talker_tensors(root)
    with torch.device("meta"):
        talker = Talker(config, tokenizer=tok, bpe=bpe)
    expected = dict(talker.state_dict())
    if config.tie_word_embeddings and HEAD not in tensors:
        expected.pop(HEAD)  # the tied head is the embedding
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {len(missing)} tensors: {_names(missing)}"] if missing else []) + \
                ([f"unexpected {len(unexpected)} tensors: {_names(unexpected)}"] if unexpected else [])
        raise TalkerError(f"talker weights in {root} do not match Ming's talker: " + "; ".join(parts))
    bad = [f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if tensors[k].shape != v.shape]
    if bad:
        raise TalkerError(f"talker tensors with the wrong shape: {_names(bad)}")
    dev = torch.device(device)
    dtype = dtype or (torch.float32 if dev.type == "cpu" else torch.bfloat16)
    talker.load_state_dict({k: v.to(dev, dtype) for k, v in tensors.items()}, strict=False, assign=True)
    if HEAD not in tensors:
        talker.model.lm_head.weight = talker.model.model.embed_tokens.weight  # tied head
    _materialise_buffers(talker, dev)
    if talker.ids["<audio_eos>"] != MING_REFUSED_ID:
        log.debug("talker: <audio_eos> is id %d; Ming's sampling still removes id %d for 10 steps",
                 talker.ids["<audio_eos>"], MING_REFUSED_ID)
    return talker.eval()


def _materialise_buffers(talker: Talker, device: torch.device) -> None:
    """Rebuild the rotary module, whose non-persistent frequency buffers stayed on ``meta``."""
    base = talker.model.model
    with torch.device(device):
        base.rotary_emb = type(base.rotary_emb)(base.rotary_emb.config)
    leftover = [n for n, t in [*talker.named_parameters(), *talker.named_buffers()] if t.is_meta]
    if leftover:
        raise TalkerError(f"talker tensors left without values: {_names(leftover)}")
