"""The preset checkpoint that vLLM serves is the model this code builds, even after the preset changed."""

from __future__ import annotations

import json

from omni_agent.engine.backends import preset_checkpoint


def test_a_stale_preset_checkpoint_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNI_VLLM_CACHE", str(tmp_path))
    path = preset_checkpoint("tiny", 0)
    fresh = (path / "config.json").read_text()
    weights = (path / "model.safetensors").read_bytes()
    # an older version of the preset (another llm setting) written under the same name
    cfg = json.loads(fresh)
    cfg["llm_config"]["norm_head"] = not cfg["llm_config"].get("norm_head", False)
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "model.safetensors").write_bytes(weights[:-8] + b"\0" * 8)
    (path / ".omni-agent-digest").write_text("written by another version of the preset")
    assert preset_checkpoint("tiny", 0) == path
    assert (path / "config.json").read_text() == fresh
    assert (path / "model.safetensors").read_bytes() == weights
    (path / ".omni-agent-digest").unlink()  # a copy from before the digest existed is rewritten too
    (path / "config.json").write_text(json.dumps(cfg))
    preset_checkpoint("tiny", 0)
    assert (path / "config.json").read_text() == fresh


def test_vllm_backend_refuses_logprobs_instead_of_dropping_them():
    import pytest

    from omni_agent.engine.request import GenerationRequest, InvalidRequest, SamplingParams
    from omni_agent.engine.vllm_client import sampling_payload

    req = GenerationRequest(request_id="r", prompt=None, sampling=SamplingParams(logprobs=2))
    with pytest.raises(InvalidRequest, match="logprobs"):
        sampling_payload(req, 8, {0})
    assert sampling_payload(GenerationRequest(request_id="r", prompt=None), 8, {0})
