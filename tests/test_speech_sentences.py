"""Sentence splitting for streaming TTS (ARCHITECTURE section 5)."""

import pytest

from audio.sentences import MAX_CHARS, SentenceSplitter, count_units


def split_stream(text, step=1):
    s = SentenceSplitter()
    out = []
    for i in range(0, len(text), step):
        out += s.push(text[i:i + step])
    return out + s.flush()


def test_units():
    assert count_units("今天天气很好") == 6
    assert count_units("Hello there, it's 3 cats") == 5
    assert count_units("我有 three 只猫") == 5


def test_chinese_first_needs_12_units_later_8():
    text = "你好。我们今天去公园散步，好吗？天气很好，阳光明媚，我们一起去吧。然后去吃饭。"
    out = split_stream(text)
    assert "".join(out) == text
    assert count_units(out[0]) >= 12  # "你好。" alone is too short for a first piece
    assert out == ["你好。我们今天去公园散步，好吗？", "天气很好，阳光明媚，", "我们一起去吧。然后去吃饭。"]
    assert all(len(p) <= MAX_CHARS for p in out)


def test_english_words_are_units():
    text = ("Well, I think that we should go to the park today. It is sunny and warm, so we can walk "
            "for a long time. Then we eat.")
    out = split_stream(text, step=3)
    # the second piece would be 53 characters: it is cut at its last punctuation inside 50
    assert out == ["Well, I think that we should go to the park today.", "It is sunny and warm,",
                   "so we can walk for a long time.", "Then we eat."]
    assert " ".join(out) == text


def test_mixed_text_and_numbers():
    text = "我们用 Python 写代码，它的版本是 3.12，非常好用。Then we test it with pytest, and it works well."
    out = split_stream(text)
    assert "3.12" in "".join(out)  # no cut inside a number
    assert out[0].endswith("，") and count_units(out[0]) >= 12
    assert all(len(p) <= MAX_CHARS for p in out)
    assert "".join(o.replace(" ", "") for o in out) == text.replace(" ", "")


def test_max_chars_without_punctuation():
    text = "a" * 5 + " " + "bbbbbbbbbb " * 10
    out = split_stream(text)
    assert all(len(p) <= MAX_CHARS for p in out)
    assert "".join(out).replace(" ", "") == text.replace(" ", "")
    cjk = "字" * 130
    out = split_stream(cjk)
    assert [len(p) for p in out] == [50, 50, 30]


def test_flush_resets_and_same_split_for_any_deltas():
    text = "Hello there, this is the first sentence of the test. 然后我们说一句中文，好不好？"
    assert split_stream(text, 1) == split_stream(text, 7) == split_stream(text, len(text))
    s = SentenceSplitter()
    assert s.push("   ") == [] and s.flush() == []
    assert s.push("……") == [] and s.flush() == []
    with pytest.raises(TypeError):
        s.push(None)
