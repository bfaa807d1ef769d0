"""Synthetic speech from espeak-ng: the training and held-out corpora of the codec, BPE and bench.

Sentences are generated from small word and character lists with a seeded RNG, so a corpus is
reproducible from ``(split, seed)`` and the held-out split shares neither sentences nor voices with
the training split.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess

import numpy as np

from audio.codec.base import CodecError

# Voices per split: several English accents and variants, Mandarin (cmn) and Cantonese (yue).
TRAIN_VOICES = {
    "en": ["en-us", "en-gb", "en-us+f3", "en-gb-scotland+m3", "en-029", "en-us+m1", "en-gb+f1", "en-us+m3",
           "en-gb+m5", "en-us+f2", "en-gb-x-gbcwmd+m2", "en-us+f5"],
    "cmn": ["cmn", "cmn+f2", "cmn+m1", "cmn+f3", "cmn+m3", "cmn+f1"],
    "yue": ["yue", "yue+f3", "yue+m1", "yue+f1", "yue+m3"],
}
HELDOUT_VOICES = {
    "en": ["en-gb-x-rp+f4", "en-us+m7", "en-gb-x-gbclan"],
    "cmn": ["cmn+m4", "cmn+f5"],
    "yue": ["yue+m2"],
}

_EN_WORDS = (
    "the a one two small big red green old new quick slow happy quiet bright dark warm cold cat dog "
    "bird river city house garden window table music story morning evening friend teacher doctor "
    "engineer child market train station road mountain forest ocean paper letter phone computer "
    "runs walks sings reads writes opens closes finds brings carries watches follows builds paints "
    "today tomorrow always never often slowly quickly gently near under over behind inside outside "
    "and but because while after before when if then please thank you very really also still "
    "weather coffee water bread apple orange minute hour week year people question answer idea"
).split()
_EN_WORDS_HELDOUT = (
    "this that three four tiny large blue yellow ancient modern calm loud soft heavy light fox horse "
    "lake village castle kitchen bridge lamp song poem neighbour pilot farmer artist student ship "
    "airport street valley desert island picture message radio camera climbs jumps dances listens "
    "draws shuts catches sends pulls pushes visits cleans cooks tonight yesterday sometimes rarely "
    "carefully loudly above beside around across or so although until since meanwhile indeed "
    "rain snow tea juice rice cheese banana second month century children reply problem plan"
).split()
_ZH_CHARS = (
    "我你他她们的是在有不了人这中大为上个国和地到以说时要就出会可也对生能而子那得于着下自之年过发后"
    "作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心本前开但因"
    "只从想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手"
    "应战向头文体政美相见被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通"
)
_ZH_CHARS_HELDOUT = (
    "山水花草风雨雪云春夏秋冬早晚东南北书画歌舞茶饭菜鱼鸟马牛羊猫狗桥路车船灯窗桌椅衣帽鞋伞笔纸"
    "红黄蓝绿白黑快慢远近冷热旧低喜欢听唱读写走跑飞游坐站买卖送找答笑哭睡醒吃喝洗刷朋友师"
)


def sentences(lang: str, n: int, *, seed: int, heldout: bool = False) -> list[str]:
    """``n`` random sentences in ``lang`` ("en", "cmn" or "yue"), reproducible from ``seed``."""
    rng = random.Random(f"{lang}:{seed}:{heldout}")
    out = []
    for _ in range(n):
        if lang == "en":
            words = _EN_WORDS_HELDOUT if heldout else _EN_WORDS
            k = rng.randint(5, 14)
            s = " ".join(rng.choice(words) for _ in range(k))
            out.append(s[0].upper() + s[1:] + rng.choice([".", "?", "!", "."]))
        else:
            chars = _ZH_CHARS_HELDOUT if heldout else _ZH_CHARS
            parts = ["".join(rng.choice(chars) for _ in range(rng.randint(4, 9))) for _ in range(rng.randint(1, 3))]
            out.append("，".join(parts) + rng.choice(["。", "？", "！"]))
    return out


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str = "en-us", *, speed: int = 165, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng -> (mono float32 wave, rate).

    Raises:
        CodecError: espeak-ng is not installed or failed.
    """
    import soundfile as sf

    if not espeak_available():
        raise CodecError("espeak-ng is not installed (apt-get install espeak-ng)")
    proc = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        capture_output=True, timeout=120, check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise CodecError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace')[:200]}")
    wave, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    return wave.astype(np.float32), int(sr)


def corpus(minutes: float, *, seed: int, heldout: bool = False, rate: int = 16000) -> list[np.ndarray]:
    """About ``minutes`` of speech as a list of utterances at ``rate``, cycling languages and voices."""
    from audio.dsp import resample

    voices = HELDOUT_VOICES if heldout else TRAIN_VOICES
    rng = random.Random(seed)
    out: list[np.ndarray] = []
    total, i = 0.0, 0
    langs = ["en", "cmn", "yue"]
    while total < minutes * 60:
        lang = langs[i % 3]
        voice = voices[lang][(i // 3) % len(voices[lang])]
        text = " ".join(sentences(lang, 3, seed=seed * 100003 + i, heldout=heldout))
        wave, sr = synthesize(text, voice, speed=rng.randint(140, 190), pitch=rng.randint(35, 65))
        wave = resample(wave, sr, rate)
        out.append(wave)
        total += len(wave) / rate
        i += 1
    return out
