"""BPE over codec tokens: exact round trips, Ming's s3_bpe layout, clear errors."""

import json

import numpy as np
import pytest

from audio.bpe import CHAR_BASE, BPEError, CodeBPE, read_char_mapping
from audio.codec import CodecError


@pytest.fixture(scope="module")
def bpe():
    return CodeBPE.default()


def test_default_asset_layout(bpe):
    assert 4096 <= bpe.vocab_size <= 32768
    assert bpe.mapping[0] == chr(CHAR_BASE) and len(bpe.mapping) == 4096


@pytest.mark.parametrize("seed", range(5))
def test_roundtrip_random_codes(bpe, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4096, int(rng.integers(1, 3000)))
    ids = bpe.encode(codes)
    assert len(ids) <= len(codes)
    np.testing.assert_array_equal(bpe.decode(ids), codes)
    # token-by-token expansion (the streaming path) gives the same codes
    np.testing.assert_array_equal(np.concatenate([bpe.token_codes(i) for i in ids]), codes)


def test_roundtrip_real_codes_and_compression(bpe):
    from audio.codec import load_codec
    from audio.codec.espeak import synthesize
    from audio.dsp import resample

    codec = load_codec("mel-vq")
    for text, voice in [("The quick brown fox jumps over the lazy dog.", "en-us"), ("今天天气很好，我们去公园。", "cmn"),
                        ("我哋一齊去飲茶。", "yue")]:
        wave, sr = synthesize(text, voice)
        codes = codec.encode(resample(wave, sr, 16000))
        ids = bpe.encode(codes)
        np.testing.assert_array_equal(bpe.decode(ids), codes)
        assert len(ids) < len(codes)  # speech compresses


def test_train_save_load_ming_layout(tmp_path):
    rng = np.random.default_rng(0)
    motifs = [rng.integers(0, 4096, 6) for _ in range(20)]
    streams = [np.concatenate([motifs[i] for i in rng.integers(0, 20, 40)]) for _ in range(30)]
    bpe = CodeBPE.train(streams, 4200)
    assert 4096 < bpe.vocab_size <= 4200
    bpe.save(tmp_path / "s3_bpe")
    assert (tmp_path / "s3_bpe" / "char_mapping.txt").read_text(encoding="utf-8").splitlines()[1] == f"1\t{chr(CHAR_BASE + 1)}"
    loaded = CodeBPE.from_dir(tmp_path)  # finds the s3_bpe/ subfolder like Ming's talker/ folder
    for s in streams[:5]:
        assert loaded.encode(s) == bpe.encode(s)
        np.testing.assert_array_equal(loaded.decode(loaded.encode(s)), s)
    assert len(bpe.encode(streams[0])) < len(streams[0]) / 2


def test_empty_and_bad_inputs(bpe, tmp_path):
    assert bpe.encode([]) == []
    assert bpe.decode([]).size == 0
    with pytest.raises(CodecError, match=r"\[0, 4096\)"):
        bpe.encode([1, 2, 4096])
    with pytest.raises(CodecError, match="1-D"):
        bpe.encode([[1, 2]])
    with pytest.raises(CodecError, match="integers"):
        bpe.encode([1.5])
    with pytest.raises(BPEError, match="outside the vocabulary"):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(BPEError, match="outside the vocabulary"):
        bpe.decode([-1])
    with pytest.raises(BPEError, match="no tokenizer.json"):
        CodeBPE.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    (tmp_path / "char_mapping.txt").write_text("0\t\u4e00\n")
    with pytest.raises(BPEError, match="could not load"):
        CodeBPE.from_dir(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("0\t\u4e00\n1 \u4e01\n", encoding="utf-8")
    with pytest.raises(BPEError, match="bad.txt:2"):
        read_char_mapping(bad)
    bad.write_text("0\t\u4e00\n1\t\u4e00\n", encoding="utf-8")
    with pytest.raises(BPEError, match="share a character"):
        read_char_mapping(bad)
    assert json.loads((CodeBPE.default.__func__.__globals__["ASSET_DIR"] / "tokenizer.json").read_text())["model"]["type"] == "BPE"
