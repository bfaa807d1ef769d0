"""Sentence cutting: Ming's rules (omni_audio_generation + cut_text + normaliser punctuation) against
the sentences Ming's own code cut (tests/fixtures/ming_talker/cases.json, sentence_cases)."""

import json
from pathlib import Path

import pytest

from audio.sentences import SentenceSplitter, count_units, cut_text, normalize

CASES = json.loads((Path(__file__).parent / "fixtures" / "ming_talker" / "cases.json").read_text())["sentence_cases"]


def split_stream(text, step):
    s = SentenceSplitter()
    out = []
    for i in range(0, len(text), step):
        out += s.push(text[i:i + step])
    return out + s.flush()


@pytest.mark.parametrize("step", [100000, 1, 3])
@pytest.mark.parametrize("case", CASES, ids=[c["text"][:12] for c in CASES])
def test_sentences_equal_mings(case, step):
    """Whole text (as Ming sees it) and the same text streamed in 1- and 3-character deltas."""
    assert split_stream(case["text"], step) == case["sentences"]


def test_counts_first_12_then_8():
    s = SentenceSplitter()
    assert s.push("你好。") == []  # 3 elements: too few for a first cut
    out = s.push("我们今天去公园散步，")
    assert out == ["你好。我们今天去公园散步，"]
    assert s.push("天气很好吗，") == []  # 6 < 8
    assert s.push("阳光明媚，") == ["天气很好吗，阳光明媚，"]
    assert s.flush() == [] and s.push("x") == []  # flushed: a new turn


def test_decimal_point_does_not_cut_and_digits_stay():
    out = split_stream("它的版本是三点一二或者说是版本 3.12 好用吗", 2)
    assert out == ["它的版本是三点一二或者说是版本3.12好用吗"]  # Ming would verbalise the digits


def test_cut_text_repacks_long_text():
    text = "，".join(["我们今天去公园散步"] * 8) + "。"
    parts = cut_text(text)
    assert len(parts) >= 2 and all(len(p) <= 50 for p in parts)
    assert "".join(parts) == normalize(text)


def test_normalize_punctuation():
    assert normalize("Hi! (yes) a;b: c、d～") == "Hi！ yes a。b， c，d。"  # as Ming's SentenceNormalizer


def test_units_and_bad_input():
    assert count_units("今天天气很好") == 6 and count_units("我有 three 只猫") == 5
    with pytest.raises(TypeError, match="must be str"):
        SentenceSplitter().push(3)


def test_chinese_after_english_before_the_first_cut_redoes_the_turn_in_character_mode():
    text = "This is the first sentence of our test. 然后我们说一句中文，好不好？"
    whole = split_stream(text, len(text))
    assert split_stream(text, 4) == whole
    # Ming's character mode: the English letters are elements, joined with spaces (no CJK among them)
    assert whole[0].startswith("T h i s i s t h e") and whole[1:] == ["然后我们说一句中文，", "好不好？"]
