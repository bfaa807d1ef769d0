"""Processor: chat format, placeholder counts, MRoPE ids worked out by hand, decode positions, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from audio.encoder import AudioTooShortError
from omni_agent.model.processor import OmniProcessor, PromptError, asr_messages
from omni_agent.model.thinker import PlaceholderMismatchError, Thinker
from vision.preprocess import ImageError


@pytest.fixture(scope="module")
def proc() -> OmniProcessor:
    # min_pixels=1 (images and raw video frames) keeps the test media at their own (multiple-of-28) sizes.
    return OmniProcessor.for_preset("tiny", min_pixels=1, video_min_pixels=1)


def _ids(proc: OmniProcessor, text: str) -> list[int]:
    return proc.tokenizer.encode(text, add_special_tokens=False).ids


def _media_messages() -> list[dict]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (56, 84, 3), dtype=np.uint8))  # 4x6 patches -> 2x3 tokens
    frames = [rng.integers(0, 255, (28, 56, 3), dtype=np.uint8) for _ in range(4)]  # t=2, 2x4 -> 2x(1x2)
    audio = (rng.standard_normal(3200) * 0.1).astype(np.float32)  # 0.2 s -> 20 mel -> 10 -> 5 tokens
    return [{"role": "user", "content": [
        {"type": "text", "text": "Look"}, {"type": "image", "image": image},
        {"type": "text", "text": " and"}, {"type": "video", "video": frames},
        {"type": "audio", "audio": audio},
    ]}]


def test_chat_format_and_token_layout(proc: OmniProcessor) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    p = proc(msgs)
    text = proc.decode(p.input_ids, skip_special_tokens=False)
    assert text == ("<role>SYSTEM</role>Be brief.<role>HUMAN</role>Hi<role>ASSISTANT</role>Hello<|endoftext|>"
                    "<role>HUMAN</role>Bye<role>ASSISTANT</role>")
    assert proc.eos_token_id == proc.tokenizer.token_to_id("<|endoftext|>")
    assert p.rope_delta == 0 and torch.equal(p.position_ids[0], torch.arange(len(p)))
    no_gen = proc(msgs[:2], add_generation_prompt=False)
    assert proc.decode(no_gen.input_ids, skip_special_tokens=False).endswith("<role>HUMAN</role>Hi")


def test_placeholder_counts(proc: OmniProcessor) -> None:
    p = proc(_media_messages())
    kinds = [(it.kind, it.length) for it in p.mm_items]
    assert kinds == [("image", 6), ("video", 4), ("audio", 5)]
    assert p.mm_items[0].grid_thw.tolist() == [[1, 4, 6]]
    assert p.mm_items[1].grid_thw.tolist() == [[2, 2, 4]]
    text = proc.decode(p.input_ids, skip_special_tokens=False)
    assert "<image>" + "<imagePatch>" * 6 + "</image>\n" in text
    assert "<video>" + "<imagePatch>" * 4 + "</video>\n" in text
    assert "<audio>" + "<audioPatch>" * 5 + "</audio>" in text
    expected_mod = torch.zeros(len(p), dtype=torch.long)
    for it in p.mm_items:
        expected_mod[it.offset:it.offset + it.length] = 2 if it.kind == "audio" else 1
    assert torch.equal(p.modality_ids, expected_mod)
    assert len({it.content_hash for it in p.mm_items}) == 3
    assert proc(_media_messages()).mm_items[0].content_hash == p.mm_items[0].content_hash


def test_mrope_ids_by_hand(proc: OmniProcessor) -> None:
    # Video before image: Ming's walk (videos' grids first, see OmniProcessor._mrope_positions) then
    # matches the runs one to one; an image-before-video prompt is covered by tests/test_ming_inputs.py.
    msgs = _media_messages()
    parts = msgs[0]["content"]
    parts[1], parts[3] = parts[3], parts[1]
    p = proc(msgs)
    a = len(_ids(proc, "<role>HUMAN</role>Look<video>"))  # text before the video patches
    b = len(_ids(proc, "</video>\n and<image>"))
    c = len(_ids(proc, "</image>\n<audio>"))
    d = len(_ids(proc, "</audio><role>ASSISTANT</role>"))
    assert len(p) == a + 4 + b + 6 + c + 5 + d
    s_vid = a  # video grid 2 x 1 x 2
    vid = [[s_vid, s_vid, s_vid + 1, s_vid + 1],
           [s_vid, s_vid, s_vid, s_vid],
           [s_vid, s_vid + 1, s_vid, s_vid + 1]]
    after_vid = s_vid + 2  # max id + 1
    s_img = after_vid + b  # image patches start at the next text position: grid 1 x 2 x 3
    img = [[s_img] * 6,
           [s_img, s_img, s_img, s_img + 1, s_img + 1, s_img + 1],
           [s_img, s_img + 1, s_img + 2, s_img, s_img + 1, s_img + 2]]
    after_img = s_img + 3
    rows = [[], [], []]
    for r in range(3):
        rows[r] = (list(range(a)) + vid[r] + list(range(after_vid, after_vid + b)) + img[r]
                   + list(range(after_img, after_img + c + 5 + d)))  # audio numbered like text
    assert p.position_ids.tolist() == rows
    last = after_img + c + 5 + d - 1
    assert p.rope_delta == last + 1 - len(p)
    # Decoding: all three rows advance together from rope_delta.
    dec = proc.decode_positions(p.rope_delta, len(p), 3)
    assert dec.tolist() == [[last + 1, last + 2, last + 3]] * 3


def test_mrope_time_aligned_video_and_video_rope() -> None:
    frames = [np.zeros((28, 56, 3), np.uint8)] * 4
    msgs = [{"role": "user", "content": [{"type": "video", "video": frames}]}]
    aligned = OmniProcessor.for_preset("tiny", min_pixels=1, video_min_pixels=1, time_aligned_video=True)
    p = aligned(msgs)
    s = p.mm_items[0].offset  # no text before the video patches other than the prefix, all sequential
    assert p.mm_items[0].second_per_grid == pytest.approx(1.0)  # 2 frames per grid at 2 fps
    vid = p.position_ids[:, s:s + 4].tolist()
    assert vid == [[s, s, s + 2, s + 2], [s, s, s, s], [s, s + 1, s, s + 1]]  # t = s + idx * 1.0 s * 2 tok/s
    assert p.position_ids[0, s + 4].item() == s + 3

    vr = OmniProcessor.for_preset("tiny", min_pixels=1, video_min_pixels=1)
    vr.config.llm.rope_type = "video_rope"
    q = vr(msgs)
    # t stepped by 2; h/w centred ((1-1)//2 = 0, (2-1)//2 = 0) and offset by t.
    assert q.position_ids[:, s:s + 4].tolist() == [[s, s, s + 2, s + 2], [s, s, s + 2, s + 2],
                                                   [s, s + 1, s + 2, s + 3]]
    assert q.position_ids[0, s + 4].item() == s + 3


def test_asr_prompt_names_language_first(proc: OmniProcessor) -> None:
    wave = np.zeros(16000, np.float32)
    msgs = asr_messages(wave, "Cantonese")
    assert "Cantonese" in msgs[0]["content"][0]["text"] and "dialect" in msgs[0]["content"][0]["text"]
    assert "language or dialect" in asr_messages(wave)[0]["content"][0]["text"]
    p = proc(msgs)
    assert p.mm_items[0].kind == "audio" and p.mm_items[0].length == 25


def test_bad_inputs_raise_clear_errors(proc: OmniProcessor) -> None:
    with pytest.raises(ImageError, match="empty"):
        proc([{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (0, 0))}]}])
    with pytest.raises(ImageError, match="empty"):
        proc([{"role": "user", "content": [{"type": "image", "image": np.zeros((0, 5, 3), np.uint8)}]}])
    with pytest.raises(ImageError, match="no frames"):
        proc([{"role": "user", "content": [{"type": "video", "video": []}]}])
    with pytest.raises(AudioTooShortError, match="shorter than one audio token"):
        proc([{"role": "user", "content": [{"type": "audio", "audio": np.zeros(300, np.float32)}]}])
    with pytest.raises(PlaceholderMismatchError, match="<imagePatch>"):
        proc([{"role": "user", "content": "sneaky <imagePatch> token"}])
    with pytest.raises(PromptError, match="unknown role"):
        proc([{"role": "robot", "content": "x"}])
    with pytest.raises(PromptError, match="unknown content part"):
        proc([{"role": "user", "content": [{"type": "smell"}]}])
    assert issubclass(AudioTooShortError, ValueError) and issubclass(ImageError, ValueError)
    assert issubclass(PlaceholderMismatchError, ValueError) and issubclass(PromptError, ValueError)


@torch.no_grad()
def test_embed_replaces_placeholders_and_checks_counts(proc: OmniProcessor) -> None:
    thinker = Thinker.from_preset("tiny")
    p = proc(_media_messages())
    emb = thinker.embed(p)
    assert emb.shape == (len(p), thinker.hidden_size)
    for it in p.mm_items:  # media rows are the L2-normalised encoder outputs
        torch.testing.assert_close(emb[it.offset:it.offset + it.length].norm(dim=-1), torch.ones(it.length))
    text_rows = p.modality_ids == 0
    torch.testing.assert_close(emb[text_rows], thinker.embed_tokens(p.input_ids[text_rows]))
    given = [torch.full((it.length, thinker.hidden_size), float(i)) for i, it in enumerate(p.mm_items)]
    emb2 = thinker.embed(p, given)
    assert torch.all(emb2[p.mm_items[2].offset] == 2.0)
    with pytest.raises(PlaceholderMismatchError, match="audio item 2 has 5 placeholder tokens"):
        thinker.embed(p, given[:2] + [torch.zeros(4, thinker.hidden_size)])
    with pytest.raises(PlaceholderMismatchError, match="3 media items but 2"):
        thinker.embed(p, given[:2])
    out = thinker(emb[None], p.position_ids[:, None], p.modality_ids[None])
    assert out.logits.shape == (1, len(p), thinker.config.llm.vocab_size)


def test_video_clip_timestamps_give_seconds_per_grid(proc: OmniProcessor) -> None:
    from dataclasses import dataclass, field

    @dataclass
    class Clip:  # the fields of vision.video.VideoClip the processor reads
        frames: list
        timestamps: list
        fps: float = 30.0
        content_hash: str = "abc"
        audio: None = None
        extra: dict = field(default_factory=dict)

    clip = Clip([np.zeros((28, 28, 3), np.uint8)] * 4, [0.0, 0.5, 1.0, 1.5])
    p = proc([{"role": "user", "content": [{"type": "video", "video": clip}]}])
    assert p.mm_items[0].second_per_grid == pytest.approx(1.0)  # 2 frames per grid, 0.5 s apart
    assert p.mm_items[0].content_hash == "abc"
