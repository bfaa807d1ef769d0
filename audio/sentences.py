"""Ming's sentence cutting for the talker (``omni_audio_generation`` + ``cut_text`` + the sentence
normaliser's punctuation rules), on streamed text.

Ming walks the reply element by element: characters when the reply holds Chinese, else words
(its demos pass ``text.split()``). Elements gather until one ends in ``！？，。!?,`` (or ``.`` not
after a digit) while 12 or more are held (8 once a sentence has been spoken); a newline adds ``，``
(Chinese) or ``.`` (English after a letter) and cuts on the same counts; spaces are dropped in
character mode. A cut sentence is joined (``''`` when it holds Chinese, else ``' '``), normalised
and, when longer than 50 characters, split at ``。`` then ``，`` and re-packed to at most 50
(Chinese characters counted). What remains at the end is spoken when it holds a letter, a CJK
character or a digit 1-9.

Ming's quirks are kept: in character mode English words lose their spaces ("Hello world" ->
"Helloworld"), ``.`` is tested against the previous element, and ``len(piece) + chinese_count``
decides the re-packing. The normaliser's number, date, time, phone and currency verbalisation
(``normalize_regular``) is NOT ported: digits stay digits (Ming's final filter would delete
un-verbalised digits, so we keep them instead).
"""

from __future__ import annotations

import re

FIRST_MIN = 12  # elements held before the first cut
LATER_MIN = 8  # ... before later cuts
MAX_LENGTH = 50  # cut_text's max_length (omni_audio_generation's default)
TAIL_MIN = 5  # cut_text's tail_min_length
_CJK = re.compile(r"[\u4e00-\u9fff]")
_CN_COUNTED = re.compile("[\u4e00-\u4e27\u4e29-\u4e3e\u4e42-\u9fa4]")  # cut_text's text_length
_CN = "\u4e00-\u4e27\u4e29-\u4e3e\u4e42-\u9fa4"
_SPEAKABLE = re.compile(r"[a-zA-Z\u4e00-\u9fff1-9]")

# the sentence normaliser's post-processing (Ming's sentence_manager/default_config.yaml), in order;
# each group is applied key by key as a regular expression
_POSTPROCESS: list[list[tuple[str, str]]] = [
    [("…", "。"), ("!", "！"), (r"\?", "？"), (";", "；"), (":", "："), (",", "，"), (r"\(", "（"), (r"\)", "）")],
    [("……", "。")],
    [("﹐", "，"), ("﹔", "；"), ("｡", "。"), ("；", "。"), ("：", "，"), ("、", "，")],
    [("。+", "。")],
    [("/", "每")],
    [("_", " ")],
    [("～+", "～"), ("~+", "~"), ("[~～]", "。")],
    [("(?<=[^a-zA-Z])[-']+", "，"), ("[-']+(?=[^a-zA-Z])", "，")],
    # Ming keeps no digits here (its verbaliser has turned them into words); we keep digits and
    # decimal points, which the talker's tokenizer then reads as written
    [(f"[^。！？，{_CN}a-zA-Z0-9 .]", ""), (r"(?<!\d)\.|\.(?!\d)", "")],
    [("，+", "，")],
    [(" +", " ")],
]


_UNIT = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+", re.UNICODE)


def count_units(text: str) -> int:
    """Speech units in ``text``: one per CJK character plus one per Latin word or number (the demo
    talker's step cap)."""
    return len(_UNIT.findall(text))


def _full_to_half(text: str) -> str:
    """Full-width ASCII forms (U+FF01-FF5E) and the ideographic space to ASCII."""
    out = []
    for ch in text:
        code = ord(ch)
        code = 0x20 if code == 0x3000 else code - 0xFEE0
        out.append(chr(code) if 0x20 <= code <= 0x7E else ch)
    return "".join(out)


def normalize(text: str) -> str:
    """The sentence normaliser without its number verbaliser (see the module docstring)."""
    text = _full_to_half(text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # thousands separators
    text = re.sub("[\t\n\r\f]", "，", text)
    text = text.replace("㎡", "m²").replace("cm²", "平方厘米").replace("m²", "平方米")
    text = re.sub(r">(\d)", r"大于\1", text)
    text = re.sub(r"<(\d)", r"小于\1", text)
    text = text.replace("=", "等于")
    text = re.sub(r"(?<=\d)ml(?![a-zA-Z])", "毫升", text)
    text = re.sub(r"(?<=\d)mmHg(?![a-zA-Z])", "毫米汞柱", text)
    text = re.sub(r"([0-9.]+元)(-)([0-9.]+元)", r"\1至\3", text)
    for group in _POSTPROCESS:
        for pattern, target in group:
            text = re.sub(pattern, target, text)
    return text


def _cn_len(text: str) -> int:
    return len(_CN_COUNTED.findall(text))


def _pieces(text: str, sep: str, mark: str) -> list[str]:
    """Split at ``sep``; a stripped piece without final punctuation gets ``mark``."""
    out = []
    for t in text.split(sep):
        t = t.strip()
        if t:
            out.append(t if t[-1] in "！？，。!?,." else t + mark)
    return out


def cut_text(text: str, max_length: int = MAX_LENGTH, tail_min: int = TAIL_MIN) -> list[str]:
    """Ming's ``cut_text``: normalise, then re-pack pieces of at most ``max_length``."""
    text = normalize(text.replace("\n", " ")).replace("。，", "。")
    if len(text) <= max_length:
        return [text]
    packed: list[str] = []

    def append(piece: str) -> None:
        if not packed:
            packed.append(piece)
        elif len(packed[-1]) + _cn_len(piece) <= max_length:
            if packed[-1].endswith("。") and _cn_len(piece) < tail_min:
                packed.append(piece.lstrip("，"))
            else:
                packed[-1] += piece
        else:
            packed.append(piece.lstrip("，"))

    for sentence in _pieces(text.replace(".", "。").replace(",", "，"), "。", "。"):
        for clause in _pieces(sentence, "，", "，"):
            clause = clause.replace("。，", "。")
            if _cn_len(clause) > max_length:
                for i in range(0, len(clause), max_length):
                    append(clause[i:i + max_length])
            else:
                append(clause)
    return packed


class SentenceSplitter:
    """``push(delta)`` -> sentences ready to speak, ``flush()`` -> the rest (Ming's rules above).

    Ming picks character or word mode from the whole reply. Streamed, the mode is word mode until a
    CJK character arrives; if that happens before the first cut, the turn is redone in character
    mode, so the result equals Ming's on the whole text. Chinese arriving only after an English
    sentence was cut leaves that turn in word mode (Ming, seeing the whole text, would not).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._chars: bool | None = None
        self._raw = ""  # the turn's text so far (to redo word mode as character mode)
        self._pending = ""  # text not yet cut into elements (word mode: the unfinished word)
        self._held: list[str] = []
        self._count = 0

    def push(self, delta: str) -> list[str]:
        if not isinstance(delta, str):
            raise TypeError(f"text delta must be str, got {type(delta).__name__}")
        if self._count == 0:  # only read before the first cut: no copy of the whole turn per delta
            self._raw += delta
        if self._chars is False and self._count == 0 and _CJK.search(delta):
            raw = self._raw  # Chinese before the first cut: the turn is in character mode after all
            self.reset()
            self._raw, self._chars, delta = raw, True, raw
        self._pending += delta
        if self._chars is None:
            if not re.search(r"[a-zA-Z\u4e00-\u9fff]", self._pending):
                return []
            self._chars = bool(_CJK.search(self._pending))
        out: list[str] = []
        if self._chars:
            elements, self._pending = list(self._pending), ""
        else:  # words complete at whitespace; the last one may still grow
            parts = self._pending.split()
            done = bool(self._pending) and self._pending[-1].isspace()
            elements = parts if done else parts[:-1]
            self._pending = "" if done else (parts[-1] if parts else "")
        for ele in elements:
            out += self._element(ele)
        return out

    def flush(self) -> list[str]:
        if self._chars is None:  # no letter or CJK arrived: only digits can still be spoken
            self._chars = False
        elements = list(self._pending) if self._chars else self._pending.split()
        self._pending = ""
        out: list[str] = []
        for ele in elements:
            out += self._element(ele)
        if self._held and _SPEAKABLE.search("".join(self._held)):
            out += self._emit()
        self.reset()
        return out

    def _enough(self) -> bool:
        return len(self._held) >= FIRST_MIN or (self._count > 0 and len(self._held) >= LATER_MIN)

    def _element(self, ele: str) -> list[str]:
        held = self._held
        if ele[-1] in "！？，。!?," and self._enough():
            held.append(ele)
            return self._emit()
        if ele[-1] == "." and self._enough() and not re.search("[0-9]", held[-1][-1:]):
            held.append(ele)
            return self._emit()
        if ele[-1] == "\n":
            if held:
                if _CJK.search("".join(held)):
                    if _CJK.search(held[-1][-1:]):  # [-1:]: Ming indexes [-1] and fails on ""
                        held.append("，")
                else:
                    held.append(ele[:-1] + "." if len(ele) > 1 and re.search("[a-zA-Z]", ele[-2]) else ele[:-1])
            return self._emit() if self._enough() else []
        if ele != " ":
            held.append(ele)
        return []

    def _emit(self) -> list[str]:
        joined = "".join(self._held) if _CJK.search("".join(self._held)) else " ".join(self._held)
        self._held = []
        self._count += 1
        out = []
        for text in cut_text(joined):
            text = text[1:] if text[:1] == "，" else text
            if text:
                out.append(text)
        return out
