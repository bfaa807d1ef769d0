"""The talker: sampling rules, streaming generation, conditioning inputs."""

import pytest
import torch

from audio.talker import MIN_AUDIO_TOKENS, TOP_K, Talker, TalkerConfig, TalkerError


@pytest.fixture(scope="module")
def talker():
    return Talker.build("tiny", seed=0, audio_vocab_size=512)


def test_eoa_suppressed_for_first_10_tokens(talker):
    eoa = talker.ids["<audio_eos>"]
    logits = torch.zeros(talker.config.vocab_size)
    logits[eoa] = 100.0  # the model "wants" to stop at once
    g = torch.Generator().manual_seed(0)
    for step in range(MIN_AUDIO_TOKENS):
        assert talker.sample(logits.clone(), step, g) != eoa
    assert talker.sample(logits.clone(), MIN_AUDIO_TOKENS, g) == eoa


def test_top_k_20_and_audio_only(talker):
    off = talker.audio_offset
    logits = torch.randn(talker.config.vocab_size, generator=torch.Generator().manual_seed(1))
    logits[:off] += 50.0  # text tokens are never audio output, however likely
    logits[talker.ids["<audio_eos>"]] = -1e9
    top = set((torch.topk(logits[off:], TOP_K).indices + off).tolist())
    g = torch.Generator().manual_seed(2)
    seen = {talker.sample(logits.clone(), 20, g) for _ in range(600)}
    assert seen <= top
    assert len(seen) >= 15  # it samples, it does not take the argmax


def test_stream_lengths_and_range(talker):
    toks = list(talker.stream("hello world", max_new_tokens=40, seed=0))
    assert MIN_AUDIO_TOKENS <= len(toks) <= 40
    assert all(0 <= t < talker.config.audio_vocab_size for t in toks)
    assert toks == list(talker.stream("hello world", max_new_tokens=40, seed=0))  # seeded


def test_thinker_states_and_speaker_condition_the_output(talker):
    d = talker.config.thinker_hidden_size
    base = list(talker.stream("hello", max_new_tokens=20, seed=0))
    h = torch.randn(6, d, generator=torch.Generator().manual_seed(0))
    with_h = list(talker.stream("hello", hidden=h, max_new_tokens=20, seed=0))
    with_spk = list(talker.stream("hello", speaker=torch.ones(192), max_new_tokens=20, seed=0))
    assert base != with_h and base != with_spk
    x, rest = talker.prefix("hi", h, torch.ones(192))
    assert x.shape == (1, 2 + (1 + 6 + 1) + 3 + 1, talker.config.hidden_size)  # prompt, thinker, vp, bos
    assert rest == [ord("i"), talker.ids["<text_eos>"]]


def test_cached_stream_matches_full_forward(talker):
    """The KV-cached step logits equal a full forward over the same inputs."""
    x, rest = talker.prefix("abc", None, None)
    emb = talker.model.get_input_embeddings()
    nxt = emb(torch.tensor([talker.audio_offset + 7])) + emb(torch.tensor([rest[0]]))
    with torch.no_grad():
        full = talker.model(inputs_embeds=torch.cat([x, nxt[None]], 1)).logits[0, -1]
        from transformers import DynamicCache

        cache = DynamicCache()
        talker.model(inputs_embeds=x, past_key_values=cache, use_cache=True)
        step = talker.model(inputs_embeds=nxt[None], past_key_values=cache, use_cache=True,
                            position_ids=torch.tensor([[x.shape[1]]])).logits[0, -1]
    assert torch.allclose(full, step, atol=1e-4)


def test_bad_inputs(talker):
    with pytest.raises(TalkerError, match="non-empty text"):
        list(talker.stream("  "))
    with pytest.raises(TalkerError, match=r"\[T, 128\]"):
        list(talker.stream("hi", hidden=torch.zeros(3, 65)))
    with pytest.raises(TalkerError, match="192-d"):
        list(talker.stream("hi", speaker=torch.zeros(10)))
    with pytest.raises(TalkerError, match="unknown talker preset"):
        TalkerConfig.preset("huge")
    with pytest.raises(TalkerError, match="no talker config.json"):
        Talker.from_pretrained("/nonexistent")


def test_real_preset_on_meta_device():
    from transformers import Qwen2ForCausalLM

    cfg = TalkerConfig.preset("ming-lite-omni-1.5")
    assert (cfg.hidden_size, cfg.thinker_hidden_size, cfg.speaker_dim, cfg.top_k) == (896, 2048, 192, 20)
    with torch.device("meta"):
        lm = Qwen2ForCausalLM(cfg.qwen2())
    n = sum(p.numel() for p in lm.parameters())
    assert 0.4e9 < n < 0.8e9  # a Qwen2-0.5B-sized LM with the audio vocabulary added


def test_from_pretrained_ming_talker_layout(tmp_path):
    """A ``talker/`` folder (config.json with Ming's fields, HF tokenizer, safetensors) loads."""
    import json

    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from audio.talker import SPECIAL_TOKENS, _HFTokenizer

    vocab = {c: i for i, c in enumerate("abcdefghij")}
    vocab["<unk>"] = len(vocab)
    for t in SPECIAL_TOKENS:
        vocab[t] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", additional_special_tokens=list(SPECIAL_TOKENS))
    folder = tmp_path / "talker"
    tok.save_pretrained(folder)
    src = Talker(TalkerConfig.preset("tiny", text_vocab_size=len(tok), audio_vocab_size=300, thinker_hidden_size=32),
                 tokenizer=_HFTokenizer(tok))
    cfg = src.config
    (folder / "config.json").write_text(json.dumps({
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "intermediate_size": cfg.intermediate_size, "rope_theta": cfg.rope_theta,
        "vocab_size": cfg.vocab_size, "qa_model_hidden_size": 32, "vp_feature_size": 192,
        "vp_kernel_size": 1, "vp_stride": 1,
    }))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(folder / "model.safetensors"))
    loaded = Talker.from_pretrained(tmp_path)
    assert loaded.config.audio_vocab_size == 300 and loaded.config.thinker_hidden_size == 32
    assert list(loaded.stream("abc", max_new_tokens=12, seed=1)) == list(src.eval().stream("abc", max_new_tokens=12, seed=1))


def test_fast_decoder_matches_transformers(talker):
    """The hand-rolled cached stepping the stream uses gives the Qwen2 model's own logits."""
    from transformers import DynamicCache

    from audio.talker import _FastDecoder

    assert _FastDecoder.supports(talker.model)
    h = torch.randn(4, talker.config.thinker_hidden_size, generator=torch.Generator().manual_seed(3))
    x, rest = talker.prefix("hello there", h, torch.ones(192))
    emb = talker.model.get_input_embeddings().weight
    with torch.no_grad():
        dec = _FastDecoder(talker.model, x.shape[1] + 12)
        cache = DynamicCache()
        fast = dec(x[0])
        ref = talker.model(inputs_embeds=x, past_key_values=cache, use_cache=True).logits[0, -1]
        assert torch.allclose(fast, ref, atol=1e-4)
        for i in range(12):
            nxt = emb[talker.audio_offset + 5 * i] + emb[rest[i % len(rest)]]
            fast = dec(nxt[None])
            ref = talker.model(inputs_embeds=nxt[None, None], past_key_values=cache, use_cache=True,
                               position_ids=torch.tensor([[x.shape[1] + i]])).logits[0, -1]
            assert torch.allclose(fast, ref, atol=1e-4)


def test_stream_leaves_torch_threads_alone(talker):
    before = torch.get_num_threads()
    list(talker.stream("hello", max_new_tokens=15, seed=0))
    assert torch.get_num_threads() == before
