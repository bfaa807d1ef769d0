"""Checkpoints in Ming's layout: bit-exact round trips (single file and sharded), names, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from omni_agent.model.checkpoint import CheckpointError, to_checkpoint_name
from omni_agent.model.config import ThinkerConfig
from omni_agent.model.processor import OmniProcessor
from omni_agent.model.thinker import Thinker


@pytest.fixture(scope="module")
def tiny() -> Thinker:
    return Thinker.from_preset("tiny", seed=3)


def _assert_same(a: Thinker, b: Thinker) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("shard_bytes", [None, 300_000])
def test_round_trip_is_bit_exact(tiny: Thinker, tmp_path: Path, shard_bytes: int | None) -> None:
    tiny.save_pretrained(tmp_path, max_shard_bytes=shard_bytes)
    if shard_bytes:
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
        assert not (tmp_path / "model.safetensors").exists()
    assert (tmp_path / "tokenizer.json").is_file()
    loaded = Thinker.from_pretrained(tmp_path)
    _assert_same(tiny, loaded)
    ids = torch.arange(10)[None]
    pos = torch.arange(10).view(1, 1, -1).expand(3, 1, -1)
    with torch.no_grad():
        # The weights are bit-exact (above); the logits may differ in the last bit because tensors read from
        # a memory-mapped shard sit at other alignments, which changes the SIMD summation order.
        torch.testing.assert_close(tiny(tiny.embed_tokens(ids), pos).logits,
                                   loaded(loaded.embed_tokens(ids), pos).logits, atol=1e-6, rtol=0)
    proc = OmniProcessor.from_pretrained(tmp_path)
    assert proc.decode(proc([{"role": "user", "content": "hi"}]).input_ids, skip_special_tokens=False).startswith(
        "<role>HUMAN</role>hi")


def test_bf16_round_trip(tiny: Thinker, tmp_path: Path) -> None:
    bf = Thinker.from_preset("tiny", seed=3, dtype=torch.bfloat16)
    bf.save_pretrained(tmp_path)
    loaded = Thinker.from_pretrained(tmp_path)
    assert loaded.dtype == torch.bfloat16
    _assert_same(bf, loaded)
    as_fp32 = Thinker.from_pretrained(tmp_path, dtype=torch.float32)
    assert as_fp32.dtype == torch.float32


def test_layout_uses_ming_names_and_config(tiny: Thinker, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path)
    names = set(load_file(str(tmp_path / "model.safetensors")))
    for expected in ("model.model.word_embeddings.weight", "model.model.layers.0.attention.query_key_value.weight",
                     "model.model.layers.0.attention.dense.weight", "model.model.layers.1.mlp.gate.weight",
                     "model.model.layers.1.mlp.image_gate.weight", "model.model.layers.1.mlp.audio_gate.weight",
                     "model.model.layers.0.mlp.experts.7.down_proj.weight",
                     "model.model.layers.0.mlp.shared_experts.up_proj.weight",
                     "model.model.layers.0.input_layernorm.weight", "model.model.layers.0.post_attention_layernorm.weight",
                     "model.model.norm.weight", "model.lm_head.weight", "vision.patch_embed.proj.weight",
                     "vision.blocks.0.attn.qkv.weight", "vision.merger.mlp.2.weight", "audio.conv1.weight",
                     "audio.blocks.0.attn.query.weight", "linear_proj.0.weight", "linear_proj.2.weight",
                     "linear_proj_audio.0.weight", "linear_proj_audio.3.weight"):
        assert expected in names, expected
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert {"llm_config", "vision_config", "audio_config", "whisper_config", "talker_config"} <= cfg.keys()
    assert cfg["llm_config"]["rope_scaling"]["type"] == "3D"
    assert cfg["audio_config"]["whisper_encoder_config"]["n_mels"] == 128
    assert ThinkerConfig.from_ming_dict(cfg) == tiny.config
    real = ThinkerConfig.preset("ming-lite-omni-1.5")
    assert ThinkerConfig.from_ming_dict(real.to_ming_dict()) == real
    assert to_checkpoint_name("model.model.norm.weight") == "model.model.norm.weight"


def test_missing_and_unexpected_weights_are_named(tiny: Thinker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tiny.save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    with safe_open(str(f), "pt") as sf:
        tensors = {k: sf.get_tensor(k) for k in sf.keys()}  # noqa: SIM118
    tensors.pop("model.model.layers.1.mlp.audio_gate.weight")
    tensors["talker.some.weight"] = torch.zeros(2)  # other parts' weights are skipped silently
    tensors["model.model.mystery.weight"] = torch.zeros(2)
    save_file(tensors, str(f))
    with pytest.raises(CheckpointError, match=r"lacks 1 weights: model\.model\.layers\.1\.mlp\.audio_gate\.weight"):
        Thinker.from_pretrained(tmp_path)
    tensors["model.model.layers.1.mlp.audio_gate.weight"] = torch.zeros(8, 128)
    tensors.pop("audio.positional_embedding")  # rebuilt: it is Whisper's fixed sinusoid table
    save_file(tensors, str(f))
    with caplog.at_level("WARNING"):
        loaded = Thinker.from_pretrained(tmp_path)
    assert "model.model.mystery.weight" in caplog.text and "talker" not in caplog.text
    torch.testing.assert_close(loaded.audio.positional_embedding, tiny.audio.positional_embedding)
    tensors["model.model.norm.weight"] = torch.zeros(7)
    save_file(tensors, str(f))
    with pytest.raises(CheckpointError, match=r"model\.model\.norm\.weight has shape \(7,\)"):
        Thinker.from_pretrained(tmp_path)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        Thinker.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(ThinkerConfig.preset("tiny").to_ming_dict()))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        Thinker.from_pretrained(tmp_path)
