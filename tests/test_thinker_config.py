"""Ming's release config.json in each shape it comes in, and the configs that must be refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from omni_agent.model.config import ThinkerConfig
from omni_agent.model.errors import ConfigError

# Ming 1.5's config.json as published on GitHub (yongjie-lv/Ming d0391b1): Whisper settings under
# whisper_config.whisper_encoder_config; audio_config describes an unused SANM encoder (ds_stride 1).
GITHUB = json.loads((Path(__file__).parent / "fixtures" / "ming_inputs" / "config_github.json").read_text())
REAL = ThinkerConfig.preset("ming-lite-omni-1.5")


def _hf_layout() -> dict:
    """The Hugging Face layout: Ming's modeling code reads audio_config.whisper_encoder_config."""
    d = copy.deepcopy(GITHUB)
    whisper = d.pop("whisper_config")
    d["audio_config"] = {**whisper, "norm_query_embeds": True}
    return d


@pytest.mark.parametrize("layout", ["github", "huggingface"])
def test_release_layouts_give_the_real_dimensions(layout: str) -> None:
    cfg = ThinkerConfig.from_ming_dict(GITHUB if layout == "github" else _hf_layout())
    assert cfg.llm == REAL.llm
    assert cfg.vision == REAL.vision
    assert cfg.audio == REAL.audio  # Whisper sizes read from the nested block, ds_stride 2 (not SANM's 1)
    assert cfg.llm.norm_head is False and cfg.llm.rope_type == "3D" and cfg.llm.mrope_section == [16, 24, 24]


@pytest.mark.parametrize("layout", ["github", "huggingface"])
def test_whisper_sizes_are_read_not_defaulted(layout: str) -> None:
    d = copy.deepcopy(GITHUB) if layout == "github" else _hf_layout()
    block = d["whisper_config"] if layout == "github" else d["audio_config"]
    block["whisper_encoder_config"].update(n_state=64, n_head=2, n_layer=3, n_ctx=1500)
    block["ds_kernel_size"] = 5
    a = ThinkerConfig.from_ming_dict(d).audio
    assert (a.n_state, a.n_head, a.n_layer, a.n_ctx, a.ds_kernel_size, a.ds_stride) == (64, 2, 3, 1500, 5, 2)


def test_video_rope_ignores_rope_scaling_sections() -> None:
    d = copy.deepcopy(GITHUB)
    d["llm_config"]["rope_scaling"] = {"type": "video_rope", "mrope_section": [16, 24, 24], "factor": None}
    llm = ThinkerConfig.from_ming_dict(d).llm
    assert llm.rope_type == "video_rope" and llm.video_rope_section == [48, 16]
    d["llm_config"]["video_rope_section"] = [40, 24]
    assert ThinkerConfig.from_ming_dict(d).llm.video_rope_section == [40, 24]


@pytest.mark.parametrize("value", [True, False, None])
def test_norm_head(value: bool | None) -> None:
    d = copy.deepcopy(GITHUB)
    if value is None:
        del d["llm_config"]["norm_head"]
    else:
        d["llm_config"]["norm_head"] = value
    assert ThinkerConfig.from_ming_dict(d).llm.norm_head is bool(value)  # absent: Ming's default, off


@pytest.mark.parametrize("rope_type", ["3D", "video_rope"])
@pytest.mark.parametrize("preset", ["tiny", "ming-lite-omni-1.5"])
def test_round_trip(preset: str, rope_type: str) -> None:
    cfg = ThinkerConfig.preset(preset)
    cfg.llm.rope_type = rope_type
    cfg.llm.norm_head = True
    assert ThinkerConfig.from_ming_dict(json.loads(json.dumps(cfg.to_ming_dict()))) == cfg


def _broken(path: str, value: object) -> dict:
    d = copy.deepcopy(GITHUB)
    *parents, key = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[key]
    else:
        node[key] = value
    return d


@pytest.mark.parametrize("path,value,message", [
    ("llm_config", KeyError, "no llm_config"),
    ("llm_config.rope_scaling", None, "rope_scaling.type is None"),
    ("llm_config.rope_scaling", {"type": "linear", "factor": 2.0}, "'linear'"),
    ("llm_config.first_k_dense_replace", 1, "dense MLP"),
    ("llm_config.tie_word_embeddings", True, "tied lm_head"),
    ("llm_config.rope_scaling", {"type": "3D", "mrope_section": [16, 16, 16]}, "covers 96 of head_dim 128"),
    ("whisper_config", KeyError, "no Whisper encoder settings"),
    ("whisper_config.whisper_encoder_config.n_state", KeyError, "lacks n_state"),
])
def test_configs_that_cannot_be_served_are_refused(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ThinkerConfig.from_ming_dict(_broken(path, value))


def test_model_modules_import_without_cycles() -> None:
    """No module of omni_agent.model imports another that imports it back (lazy imports included)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "omni_agent" / "model"
    graph: dict[str, set[str]] = {}
    for f in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("omni_agent.model."):
                deps.add(node.module.rsplit(".", 1)[1])
        graph[f.stem] = deps

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for d in graph.get(start, ()):
            if d == goal or (d not in seen and reaches(d, goal, seen | {d})):
                return True
        return False

    assert {"checkpoint", "thinker", "processor", "config"} <= graph.keys()
    cyclic = sorted(m for m in graph if reaches(m, m, set()))
    assert cyclic == [], f"import cycle through {cyclic}"
