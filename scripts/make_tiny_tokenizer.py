"""Train the ``tiny`` preset's tokenizer: a small byte-level BPE with Ming's special tokens.

The training text is generated here (English and Chinese sentences from templates, deterministic),
so the output is reproducible with no download. Special tokens come first, so their ids are fixed
(``<|endoftext|>`` = 1, ``<imagePatch>`` = 6, ``<image>`` = 7, ``<video>`` = 9, ...), which the tiny
preset's config relies on. Output: ``omni_agent/model/assets/tiny_tokenizer.json``.

    python scripts/make_tiny_tokenizer.py [--vocab-size 3000] [--out PATH]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

# Ming's special tokens (tokenizer_config.json of Ming-Lite-Omni), in an order that keeps the ids the
# tiny config names (pad/eos 1, image patch 6, image start 7, video start 9) stable.
SPECIAL_TOKENS = [
    "<|startoftext|>", "<|endoftext|>", "<role>", "</role>", "[CLS]", "[gMASK]",
    "<imagePatch>", "<image>", "</image>", "<video>", "</video>",
    "<gen_imagePatch>", "<gen_image>", "</gen_image>", "<imageHere>", "<end_of_chunk>",
    "<end_of_audio>", "<audioPatch>", "<audio>", "</audio>", "<gen_audioPatch>", "<gen_audio>", "</gen_audio>",
    "<audioHere>", "<framePatch>", "<text>", "<asr>", "<tts>",
    "<|arithmetic_start|>", "<|arithmetic_end|>", "<|number_start|>", "<|number_end|>",
]
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "omni_agent" / "model" / "assets" / "tiny_tokenizer.json"

EN_SUBJECTS = ["The user", "A small robot", "The assistant", "My friend", "The camera", "This video", "The phone",
               "Our team", "The weather", "A cat", "The model", "The picture", "She", "He", "They", "We", "I"]
EN_VERBS = ["sees", "describes", "opens", "answers", "records", "explains", "finds", "draws", "hears", "reads",
            "clicks", "sends", "plays", "writes", "translates", "summarises", "counts", "shows"]
EN_OBJECTS = ["a red car on the street", "the settings app", "three people in the kitchen", "a short message",
              "the weather forecast for tomorrow", "a photo of the mountains", "the answer to the question",
              "a song about the sea", "the button at the top of the screen", "twelve apples and two bananas",
              "the transcript of the meeting", "a picture of a dog", "the map of the city", "an email to Alice"]
EN_EXTRA = [
    "What is in this image?", "Please describe the video in detail.", "Transcribe the audio.",
    "Hello! How can I help you today?", "Sure, here is a short summary.", "The box is at (120, 340, 560, 900).",
    "click(x=0.38,y=0.08)", "I am not sure, could you repeat that?", "Thank you very much.",
    "Generate an image of a sunset over the ocean.", "Which language is spoken in this recording?",
    "The first step is to open the app, then tap the search bar.", "It is 3:45 pm on Monday, June 2nd.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14 -7 50%", "def add(a, b):\n    return a + b\n",
    '{"action_type": "click", "x": 540, "y": 1200}', "Yes.", "No.", "OK!", "Why?",
]
ZH_SUBJECTS = ["我", "你", "他", "她", "我们", "用户", "助手", "这只猫", "这个模型", "这张图片", "这段视频", "小明"]
ZH_VERBS = ["看到", "描述", "打开", "回答", "录下", "解释", "找到", "画出", "听到", "读了", "点击", "发送", "翻译"]
ZH_OBJECTS = ["一辆红色的汽车", "设置应用", "厨房里的三个人", "一条短信", "明天的天气预报", "山上的照片", "这个问题的答案",
              "一首关于大海的歌", "屏幕上方的按钮", "会议记录", "一只小狗", "城市地图", "一封邮件"]
ZH_EXTRA = [
    "请描述这张图片。", "这段音频说的是什么？", "你好，有什么可以帮你的吗？", "今天天气很好。", "谢谢！",
    "请把这句话翻译成英文。", "这是粤语。", "这是四川话。", "这是上海话。", "这是闽南语。", "这是普通话。",
    "请先说出语言或方言，然后转写。", "我们明天下午三点见面。", "图片里有一只猫在睡觉。", "好的，马上为您打开。",
]


def corpus(n_sentences: int = 6000, seed: int = 0) -> list[str]:
    """Deterministic mixed English/Chinese training lines."""
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(n_sentences):
        if rng.random() < 0.6:
            s = f"{rng.choice(EN_SUBJECTS)} {rng.choice(EN_VERBS)} {rng.choice(EN_OBJECTS)}."
            if rng.random() < 0.3:
                s += " " + rng.choice(EN_EXTRA)
        else:
            s = f"{rng.choice(ZH_SUBJECTS)}{rng.choice(ZH_VERBS)}了{rng.choice(ZH_OBJECTS)}。"
            if rng.random() < 0.3:
                s += rng.choice(ZH_EXTRA)
        lines.append(s)
    lines += EN_EXTRA * 20 + ZH_EXTRA * 20
    lines += ["<role>HUMAN</role>", "<role>ASSISTANT</role>", "<role>SYSTEM</role>"] * 50
    return lines


def build(vocab_size: int = 3000):  # noqa: ANN201 - tokenizers.Tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    tok = build(args.vocab_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out), pretty=False)
    print(f"wrote {args.out} (vocab {tok.get_vocab_size()}, {args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
