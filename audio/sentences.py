"""Cut the thinker's streamed text into sentences the talker can speak (ARCHITECTURE section 5).

A piece is cut at punctuation once it holds at least 12 units (the first piece of a turn, so that
audio starts early) or 8 units (later pieces), and never runs past 50 characters. Units are
characters for Chinese (CJK) text and words for English (Latin) text; mixed text adds both.
"""

from __future__ import annotations

import re

FIRST_MIN_UNITS = 12  # first piece: start speaking after a short clause
LATER_MIN_UNITS = 8  # later pieces: shorter clauses are fine, audio is already flowing
MAX_CHARS = 50  # the talker's input limit per piece (Ming's max_length)

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(rf"[{_CJK}]")
_UNIT_RE = re.compile(rf"[{_CJK}]|[^\s{_CJK}\W]+(?:['’][^\s{_CJK}\W]+)*", re.UNICODE)
_WIDE_PUNCT = "。！？；，、：…\n"  # cut right after these
_ASCII_PUNCT = ".!?;:,"  # cut after these only when whitespace follows ("3.14", "e.g" stay whole)


def count_units(text: str) -> int:
    """Speech units in ``text``: one per CJK character plus one per Latin word or number."""
    return len(_UNIT_RE.findall(text))


class SentenceSplitter:
    """Stateful splitter: ``push(delta)`` returns the pieces completed so far, ``flush()`` the rest.

    Args:
        first_min_units: units needed before the first cut of a turn.
        later_min_units: units needed before later cuts.
        max_chars: hard limit on a piece's length.
    """

    def __init__(self, first_min_units: int = FIRST_MIN_UNITS, later_min_units: int = LATER_MIN_UNITS,
                 max_chars: int = MAX_CHARS):
        self.first_min_units = first_min_units
        self.later_min_units = later_min_units
        self.max_chars = max_chars
        self.reset()

    def reset(self) -> None:
        """Start a new turn: empty buffer, the next cut uses the first-piece threshold."""
        self._buf = ""
        self._emitted = 0

    def push(self, text_delta: str) -> list[str]:
        """Add streamed text; returns the pieces that are complete (possibly none)."""
        if not isinstance(text_delta, str):
            raise TypeError(f"text delta must be str, got {type(text_delta).__name__}")
        self._buf += text_delta
        out = []
        while (cut := self._find_cut(final=False)) is not None:
            self._take(cut, out)
        return out

    def flush(self) -> list[str]:
        """End of the turn: return what is left (as one or more pieces) and reset."""
        out: list[str] = []
        while (cut := self._find_cut(final=True)) is not None:
            self._take(cut, out)
        self._take(len(self._buf), out)
        self.reset()
        return out

    def _take(self, cut: int, out: list[str]) -> None:
        piece, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
        if count_units(piece):
            out.append(piece)
            self._emitted += 1
        elif piece and out:  # stray punctuation ("……") belongs to the piece before
            out[-1] += piece

    def _find_cut(self, *, final: bool) -> int | None:
        """Index just past the cut point, or None to wait for more text."""
        buf = self._buf
        need = self.first_min_units if self._emitted == 0 else self.later_min_units
        units = 0
        last_punct = last_space = None
        for i, ch in enumerate(buf):
            if i >= self.max_chars:
                break
            if _CJK_RE.fullmatch(ch) or (_is_word_char(ch) and (i == 0 or not _is_word_char(buf[i - 1]))):
                units += 1  # a CJK character, or the first character of a Latin word
            if ch.isspace():
                last_space = i
            is_cut = ch in _WIDE_PUNCT or (
                ch in _ASCII_PUNCT and (i + 1 < len(buf) and buf[i + 1].isspace() or (final and i + 1 == len(buf)))
            )
            if is_cut:
                last_punct = i + 1
                if units >= need:
                    return i + 1
        if len(buf) > self.max_chars:  # too long without a good cut: best break inside the limit
            return last_punct or (last_space + 1 if last_space else None) or self.max_chars
        return None


def _is_word_char(ch: str) -> bool:
    return (ch.isalnum() or ch in "'’") and not _CJK_RE.fullmatch(ch)
