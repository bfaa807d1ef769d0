"""Ming's talker against fixtures made with Ming's own code (scripts/fixtures/make_ming_talker_fixtures.py).

The fixture is a tiny checkpoint in Ming's release layout plus, per case, the prefix ids, logits and
sampled token stream that Ming's ``omni_audio_generation`` -> ``generate()`` produced on it.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audio.bpe import CodeBPE
from audio.talker import MING_REFUSED_ID, TOP_K, Talker, TalkerError
from audio.talker_checkpoint import talker_tensors
from audio.voices import load_voice

FIX = Path(__file__).parent / "fixtures" / "ming_talker"
RELEASE = FIX / "release"
META = json.loads((FIX / "cases.json").read_text())
CASES = META["cases"]
TOL = 1e-4


@pytest.fixture(scope="module")
def talker():
    return Talker.from_pretrained(RELEASE)


@pytest.fixture(scope="module")
def fx():
    return load_file(str(FIX / "cases.safetensors"))


def _inputs(name, fx):
    case = CASES[name]
    return case, load_voice(case["voice"]), (fx["thinker"] if case["thinker"] else None)


def test_release_layout_loads_every_talker_tensor(talker):
    index = json.loads((RELEASE / "model.safetensors.index.json").read_text())["weight_map"]
    in_file = {k[len("talker."):] for k in index if k.startswith("talker.")}
    state = talker.state_dict()
    assert in_file == set(state) - {"model.lm_head.weight"}  # zero missing, zero unexpected
    assert talker.model.lm_head.weight is talker.model.model.embed_tokens.weight  # tied, as Qwen2.5-0.5B
    assert talker.config.vocab_size == 151668  # the root talker_config's vocab, not the Qwen2 config's
    assert talker.audio_offset == 268 and talker.config.thinker_hidden_size == 8
    ckpt = talker_tensors(RELEASE)
    assert all(torch.equal(state[k], v) for k, v in ckpt.items())


@pytest.mark.parametrize("name", sorted(CASES))
def test_prefix_equals_ming(talker, fx, name):
    case, voice, hidden = _inputs(name, fx)
    p = talker.prefix_ids(case["text"], voice, 0 if hidden is None else hidden.shape[0])
    assert p.audio_ids == case["audio_prefix"]
    assert p.text_ids == case["text_prefix"]
    assert p.vp_at == case["vp_insert_loc"]


def test_voice_print_input_is_mings(fx):
    for name, case in CASES.items():
        v = load_voice(case["voice"])
        assert torch.equal(v.vp_emb.to(torch.bfloat16).float(), fx[f"{name}.vp_emb_bf16"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_equal_ming(talker, fx, name):
    case, voice, hidden = _inputs(name, fx)
    probe = fx[f"{name}.logits_probe"]  # [steps, 512] at fixed ids
    logits = talker.forced_logits(case["text"], voice, case["tokens"][:len(probe) - 1], hidden=hidden)
    assert (logits[:, fx["probe_ids"]] - probe).abs().max() <= TOL
    if f"{name}.logits_step0" in fx:  # the prefix's logits over the whole vocabulary
        assert (logits[0] - fx[f"{name}.logits_step0"]).abs().max() <= TOL


@pytest.mark.parametrize("name", ["luna_s1", "eng_thinker_s2", "eng_thinker_s3"])
def test_sampled_tokens_equal_ming(talker, fx, name):
    """Same seed, same draws: Ming seeds the global generator, we a fresh one; the streams stop at
    <audio_eos> (luna_s1 before step 10: Ming refuses id 151666, not this tokenizer's <audio_eos>)."""
    case, voice, hidden = _inputs(name, fx)
    assert list(talker.generate(case["text"], voice, hidden=hidden, seed=case["seed"])) == case["tokens"]


def test_sampled_tokens_equal_ming_first_200(talker, fx):
    case, voice, _ = _inputs("luna_s0", fx)
    assert list(talker.generate(case["text"], voice, seed=0, max_steps=200)) == case["tokens"][:200]


@pytest.mark.slow
def test_sampled_tokens_equal_ming_to_the_1000_step_limit(talker, fx):
    case, voice, _ = _inputs("luna_s0", fx)
    assert len(case["tokens"]) == 1000
    assert list(talker.generate(case["text"], voice, seed=0)) == case["tokens"]


def test_bpe_encode_and_per_token_decode_equal_ming():
    bpe = CodeBPE.from_dir(RELEASE / "talker" / "s3_bpe")
    ref = META["bpe"]
    assert bpe.encode(ref["codes"]) == ref["ids"]
    assert [bpe.token_codes(i).tolist() for i in ref["ids"][:len(ref["per_token"])]] == ref["per_token"]


def test_sampling_rule(talker):
    """Top-20 over the whole vocabulary first, then the refused id removed for 10 steps."""
    v = talker.config.vocab_size
    logits = torch.linspace(0, 1, v)
    logits[MING_REFUSED_ID] = 50.0  # top-1
    logits[5] = 49.0  # a text id stays eligible: Ming does not mask them
    top = set(torch.topk(logits, TOP_K).indices.tolist())
    g = torch.Generator().manual_seed(0)
    early = {talker.sample(logits, 9, g) for _ in range(300)}
    assert MING_REFUSED_ID not in early and early <= top and 5 in early
    assert talker.sample(logits, 10, torch.Generator().manual_seed(0)) == MING_REFUSED_ID


def test_text_longer_than_the_voice_prompt_is_refused(talker):
    with pytest.raises(TalkerError, match="text too long for voice 'luna'"):
        talker.prefix_ids("x" * 400, load_voice("luna"))


# -- broken checkpoints: one-line errors naming the file or tensors ------------------------------------


@pytest.fixture()
def copy(tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(RELEASE, dst)
    return dst


TALKER_SHARD = "model-00002-of-00002.safetensors"


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_shard_is_named(copy):
    (copy / TALKER_SHARD).unlink()
    with pytest.raises(TalkerError) as e:
        Talker.from_pretrained(copy)
    assert TALKER_SHARD in _one_line(e) and "does not exist" in str(e.value)


def test_corrupted_shard_is_named(copy):
    data = (copy / TALKER_SHARD).read_bytes()
    (copy / TALKER_SHARD).write_bytes(data[: len(data) // 3])
    with pytest.raises(TalkerError) as e:
        Talker.from_pretrained(copy)
    assert TALKER_SHARD in _one_line(e) and "unreadable" in str(e.value)


@pytest.mark.parametrize("rel", ["talker/config.json", "config.json", "talker/s3_bpe/tokenizer.json"])
def test_missing_config_files_are_named(copy, rel):
    (copy / rel).unlink()
    with pytest.raises(TalkerError) as e:
        Talker.from_pretrained(copy)
    assert Path(rel).name in _one_line(e)


def test_missing_and_unexpected_tensors_are_named(copy):
    tensors = load_file(str(copy / TALKER_SHARD))
    del tensors["talker.vp_head.weight"]
    tensors["talker.model.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(copy / TALKER_SHARD))
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    index["weight_map"].pop("talker.vp_head.weight")
    index["weight_map"]["talker.model.extra.weight"] = TALKER_SHARD
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(TalkerError) as e:
        Talker.from_pretrained(copy)
    msg = _one_line(e)
    assert "missing 1 tensors: vp_head.weight" in msg and "unexpected 1 tensors: model.extra.weight" in msg


def test_wrong_shape_is_named(copy):
    tensors = load_file(str(copy / TALKER_SHARD))
    tensors["talker.thinker_to_talker_proj.bias"] = torch.zeros(3)
    save_file(tensors, str(copy / TALKER_SHARD))
    with pytest.raises(TalkerError, match=r"thinker_to_talker_proj.bias \(3,\) != \(4,\)"):
        Talker.from_pretrained(copy)


def test_untied_head_is_required_when_the_config_unties_it(copy):
    cfg = json.loads((copy / "talker" / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (copy / "talker" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TalkerError, match="missing 1 tensors: model.lm_head.weight"):
        Talker.from_pretrained(copy)


def test_a_checkpoint_declaring_the_talker_without_its_folder_is_an_error(copy):
    from audio.talker_checkpoint import has_talker

    shutil.rmtree(copy / "talker")
    assert has_talker(copy)  # the config declares it: no quiet switch to the demo talker
    with pytest.raises(TalkerError, match="has no talker/ folder"):
        Talker.from_pretrained(copy)


def test_unsupported_qwen2_settings_are_refused(copy):
    cfg = json.loads((copy / "talker" / "config.json").read_text())
    cfg["use_sliding_window"] = True
    (copy / "talker" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TalkerError, match="unsupported Qwen2 settings \\(use_sliding_window\\)"):
        Talker.from_pretrained(copy)
