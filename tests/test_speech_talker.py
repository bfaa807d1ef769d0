"""The tiny demo talker (random weights): Ming's prefix layout and decode loop on a small model,
the plain-tensor decoder against transformers, voices and bad inputs. Ming equivalence itself is in
test_ming_talker.py."""

import pytest
import torch

from audio.talker import MIN_AUDIO_TOKENS, SPECIAL_TOKENS, Talker, TalkerConfig, TalkerError
from audio.talker_decode import FastDecoder
from audio.voices import VoiceError, load_voice, read_voice_file


@pytest.fixture(scope="module")
def talker():
    return Talker.build("tiny", seed=0)


@pytest.fixture(scope="module")
def eng():
    return load_voice("eng")


def test_tiny_refuses_its_own_audio_eos_for_10_steps(talker):
    eoa = talker.ids["<audio_eos>"]
    assert talker.refused_id == eoa  # the tiny vocabulary has no id 151666
    logits = torch.zeros(talker.config.vocab_size)
    logits[eoa] = 100.0  # the model "wants" to stop at once
    g = torch.Generator().manual_seed(0)
    for step in range(MIN_AUDIO_TOKENS):
        assert talker.sample(logits.clone(), step, g) != eoa
    assert talker.sample(logits.clone(), MIN_AUDIO_TOKENS, g) == eoa


def test_generate_is_seeded_and_capped(talker, eng):
    toks = list(talker.generate("hello world", eng, max_steps=40, seed=0))
    assert len(toks) <= 40
    assert toks == list(talker.generate("hello world", eng, max_steps=40, seed=0))
    assert toks != list(talker.generate("hello world", eng, max_steps=40, seed=1))


def test_prefix_layout(talker, eng):
    ids = talker.ids
    p = talker.prefix_ids("hi", eng, n_thinker=3)
    wav = talker.bpe.encode(eng.prompt_tokens)
    head = [ids["<prompt>"], ids["</prompt>"], ids["<thinker_prefix>"], *[ids["<audio_pad>"]] * 3,
            ids["</thinker_prefix>"], ids["<vp>"], ids["<audio_pad>"], ids["</vp>"]]
    assert p.audio_ids == head + [ids["<audio_bos>"]] + [t + talker.audio_offset for t in wav]
    text = list(eng.prompt_text.encode()) + [ord("h"), ord("i"), ids["<text_eos>"]]
    assert p.text_ids == head + text + [ids["<text_pad>"]] * (len(p.audio_ids) - len(head) - len(text))
    assert (p.thinker_at, p.vp_at) == (3, 2 + 5 + 1)


def test_thinker_states_and_voice_condition_the_output(talker, eng):
    d = talker.config.thinker_hidden_size
    base = list(talker.generate("hello", eng, max_steps=20, seed=0))
    h = torch.randn(6, d, generator=torch.Generator().manual_seed(0))
    assert base != list(talker.generate("hello", eng, hidden=h, max_steps=20, seed=0))
    assert base != list(talker.generate("hello", load_voice("luna"), max_steps=20, seed=0))


def test_speak_yields_codes_and_text_ids_are_an_error(talker, eng):
    runs = list(talker.speak("hello", eng, max_steps=12, seed=0))
    assert runs and all(r.ndim == 1 and len(r) >= 1 and r.max() < 4096 for r in runs)
    with pytest.raises(TalkerError, match="sampled text token 7"):
        talker.token_codes(7)


def test_bad_inputs(talker, eng):
    with pytest.raises(TalkerError, match="non-empty text"):
        list(talker.generate("  ", eng))
    with pytest.raises(TalkerError, match=r"\[T, 128\]"):
        list(talker.generate("hi", eng, hidden=torch.zeros(3, 65)))
    with pytest.raises(TalkerError, match="unknown talker preset"):
        TalkerConfig.preset("huge")
    with pytest.raises(TalkerError, match="no talker/ folder"):
        Talker.from_pretrained("/nonexistent")
    with pytest.raises(TalkerError, match="refused id 151666 outside the vocabulary"):
        Talker(TalkerConfig.preset("tiny", refused_id=151666, audio_vocab_size=100))


def test_voices(tmp_path):
    luna, eng = load_voice("luna"), load_voice("eng")
    assert luna.prompt_text.startswith("道路") and eng.prompt_text.startswith("I'm")
    assert luna.prompt_tokens.shape == (150,) and eng.prompt_mel.shape == (324, 80)
    assert luna.vp_emb.shape == (192,) and luna.flow_embedding.shape == (192,)
    tokens, mel, spk = luna.detokenizer_prompt()  # Ming's spk_info entry for a built-in voice
    assert tokens.shape == (150,) and mel.shape == (150, 80) and torch.equal(spk, luna.flow_embedding)
    import shutil

    shutil.copy("audio/voices/eng_v2.pt", tmp_path / "mine.pt")
    tokens, mel, spk = load_voice(str(tmp_path / "mine.pt")).detokenizer_prompt()  # no flow prompt, vp_emb
    assert tokens.shape == (0,) and mel.shape == (0, 80) and torch.equal(spk, eng.vp_emb)
    with pytest.raises(VoiceError, match="unknown voice 'bob'"):
        load_voice("bob")
    with pytest.raises(VoiceError, match="does not exist"):
        load_voice(str(tmp_path / "x.pt"))
    raw = torch.load("audio/voices/luna_v2.pt", map_location="cpu", weights_only=True)
    del raw["vp_emb"]
    torch.save(raw, tmp_path / "partial.pt")
    with pytest.raises(VoiceError, match="lacks vp_emb"):
        read_voice_file(tmp_path / "partial.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(VoiceError, match="could not read voice prompt"):
        load_voice(str(tmp_path / "junk.pt"))


def test_real_preset_on_meta_device():
    from transformers import Qwen2ForCausalLM

    cfg = TalkerConfig.preset("ming-lite-omni-1.5")
    assert (cfg.hidden_size, cfg.thinker_hidden_size, cfg.speaker_dim, cfg.vocab_size) == (896, 2048, 192, 184445)
    with torch.device("meta"):
        lm = Qwen2ForCausalLM(cfg.qwen2())
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    n = sum(p.numel() for p in lm.parameters())
    assert 0.4e9 < n < 0.7e9  # a Qwen2-0.5B-sized LM with the audio vocabulary added, head tied


def test_fast_decoder_matches_transformers(talker, eng):
    """The hand-rolled cached stepping generate() uses gives the Qwen2 model's own logits."""
    from transformers import DynamicCache

    assert FastDecoder.supports(talker.model)
    h = torch.randn(4, talker.config.thinker_hidden_size, generator=torch.Generator().manual_seed(3))
    p = talker.prefix_ids("hello there", eng, 4)
    x = talker.embed_prefix(p, eng, h)
    emb = talker.model.get_input_embeddings().weight
    pad = talker.ids["<text_pad>"]
    with torch.no_grad():
        dec = FastDecoder(talker.model, x.shape[1] + 12)
        cache = DynamicCache()
        fast = dec(x[0])
        ref = talker.model(inputs_embeds=x, past_key_values=cache, use_cache=True).logits[0, -1]
        assert torch.allclose(fast, ref, atol=1e-4)
        for i in range(12):
            nxt = emb[talker.audio_offset + 5 * i] + emb[pad]
            fast = dec(nxt[None])
            ref = talker.model(inputs_embeds=nxt[None, None], past_key_values=cache, use_cache=True,
                               position_ids=torch.tensor([[x.shape[1] + i]])).logits[0, -1]
            assert torch.allclose(fast, ref, atol=1e-4)


def test_generate_leaves_torch_threads_alone(talker, eng):
    before = torch.get_num_threads()
    list(talker.generate("hello", eng, max_steps=15, seed=0))
    assert torch.get_num_threads() == before


def test_special_tokens_are_mings():
    assert set(SPECIAL_TOKENS) == {"<prompt>", "</prompt>", "<thinker_prefix>", "</thinker_prefix>", "<audio_pad>",
                                   "<vp>", "</vp>", "<audio_bos>", "<audio_eos>", "<text_eos>", "<text_pad>"}
