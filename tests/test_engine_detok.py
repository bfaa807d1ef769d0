"""Incremental detokenisation with a byte-level tokenizer: a character split across tokens is held back."""

from __future__ import annotations

import random

import pytest

from omni_agent.engine.output_processor import UNFINISHED_CHAR, IncrementalDetokenizer
from omni_agent.model.processor import OmniProcessor


@pytest.fixture(scope="module")
def processor() -> OmniProcessor:
    return OmniProcessor.for_preset("tiny")


def stream(processor: OmniProcessor, ids: list[int], stop: list[str] | None = None) -> tuple[list[str], bool]:
    """The deltas the engine would send for ``ids``, one token per step, and whether a stop string hit."""
    detok = IncrementalDetokenizer(processor.tokenizer, stop or [], {processor.eos_token_id})
    deltas = []
    for i in ids:
        if detok.push(i):
            deltas.append(detok.delta(final=True))
            return deltas, True
        deltas.append(detok.delta(final=False))
    deltas.append(detok.delta(final=True))
    return deltas, False


def test_tiny_tokenizer_splits_chinese_characters(processor):
    """The premise: some tokens of the tiny byte-level BPE are part of a character's UTF-8 bytes."""
    ids = processor.tokenizer.encode("中文字符测试").ids
    assert any(processor.tokenizer.decode([i]) == UNFINISHED_CHAR for i in ids)


@pytest.mark.parametrize("text", ["中文字符测试，你好世界", "日本語と한국어 mixed with ascii", "emoji 🙂👍🏽 ok", "naïve café"])
def test_streamed_deltas_concatenate_to_the_full_decode(processor, text):
    ids = processor.tokenizer.encode(text).ids
    deltas, _ = stream(processor, ids)
    full = processor.tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(deltas) == full
    assert not any(UNFINISHED_CHAR in d for d in deltas)  # never half a character on the wire


def test_random_multibyte_text_and_cuts(processor):
    """Property: deltas == full decode for any prefix of the tokens (a length cut included); a
    replacement character appears only where the full decode of that prefix has one (a cut mid-character)."""
    rng = random.Random(0)
    alphabet = "中文字符测试你好世界日本語한국어éüß🙂👍🏽 abc，。"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 25)))
        ids = processor.tokenizer.encode(text).ids
        ids = ids[:rng.randrange(1, len(ids) + 1)]
        deltas, _ = stream(processor, ids)
        full = processor.tokenizer.decode(ids, skip_special_tokens=True)
        assert "".join(deltas) == full
        if UNFINISHED_CHAR not in full:
            assert not any(UNFINISHED_CHAR in d for d in deltas)
        assert not any(UNFINISHED_CHAR in d for d in deltas[:-1])  # only the final flush may carry one


def test_stop_string_after_a_split_character(processor):
    ids = processor.tokenizer.encode("你好世界STOP后面").ids
    deltas, hit = stream(processor, ids, stop=["STOP"])
    assert hit and "".join(deltas) == "你好世界"
    assert not any(UNFINISHED_CHAR in d for d in deltas)
