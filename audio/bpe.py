"""Byte-pair compression of codec tokens, in Ming's ``s3_bpe`` layout.

Each of the 4096 codes maps to one character (``char_mapping.txt``: ``code<TAB>char`` per line; we
use the CJK ideographs from U+4E00 as Ming does), a code stream becomes a string, and an HF
``tokenizers`` BPE model (``tokenizer.json``) merges frequent runs into single tokens. Every token
expands back to a fixed run of codes, so decoding is exact and can run token by token.

Legend: N codes, L BPE tokens, V BPE vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audio.codec.base import CODEBOOK_SIZE, CodecError, check_codes

ASSET_DIR = Path(__file__).parent / "codec" / "assets" / "s3_bpe"
TOKENIZER_FILE = "tokenizer.json"
MAPPING_FILE = "char_mapping.txt"
CHAR_BASE = 0x4E00  # code i <-> chr(CHAR_BASE + i): one CJK ideograph per code
MAX_VOCAB = 32768  # Ming's BPE vocabulary
_IGNORED_CHARS = " \u2581\u0120"  # whitespace / metaspace markers some tokenizers add on decode


class BPEError(CodecError):
    """A BPE tokenizer, token id or code stream that cannot be used."""


def default_char_mapping(codebook_size: int = CODEBOOK_SIZE) -> dict[int, str]:
    """code -> character, ``chr(0x4E00 + code)``."""
    return {i: chr(CHAR_BASE + i) for i in range(codebook_size)}


def read_char_mapping(path: str | Path) -> dict[int, str]:
    """Parse ``char_mapping.txt`` (``code<TAB>char`` per line).

    Raises:
        BPEError: a malformed line, a repeated code or character, or an empty file.
    """
    mapping: dict[int, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 2 or not parts[0].strip().isdigit() or len(parts[1]) != 1:
            raise BPEError(f"{path}:{n}: expected 'code<TAB>one character', got {line!r}")
        code, ch = int(parts[0]), parts[1]
        if code in mapping:
            raise BPEError(f"{path}:{n}: code {code} mapped twice")
        mapping[code] = ch
    if not mapping:
        raise BPEError(f"{path}: no mappings")
    if len(set(mapping.values())) != len(mapping):
        raise BPEError(f"{path}: two codes share a character")
    return mapping


def write_char_mapping(mapping: dict[int, str], path: str | Path) -> None:
    Path(path).write_text("".join(f"{k}\t{v}\n" for k, v in sorted(mapping.items())), encoding="utf-8")


class CodeBPE:
    """Lossless BPE over codec codes.

    Args:
        tokenizer: an HF ``tokenizers.Tokenizer`` whose vocabulary is made of mapped characters.
        mapping: code -> character.
    """

    def __init__(self, tokenizer: Any, mapping: dict[int, str]):
        self.tokenizer = tokenizer
        self.mapping = mapping
        self.codebook_size = max(mapping) + 1
        self._char_to_code = {v: k for k, v in mapping.items()}
        vocab = tokenizer.get_vocab()
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0
        table: list[np.ndarray | None] = [None] * self.vocab_size
        for tok, idx in vocab.items():
            chars = [c for c in tok if c not in _IGNORED_CHARS]
            try:
                table[idx] = np.array([self._char_to_code[c] for c in chars], np.int64)
            except KeyError:
                table[idx] = None  # special or foreign token: not an audio token
        self._expand = table  # token id -> the codes it stands for (None: not an audio token)

    # -- loading / saving --------------------------------------------------------------------------
    @classmethod
    def from_files(cls, tokenizer_json: str | Path, char_mapping: str | Path) -> CodeBPE:
        """Load Ming's pair of files.

        Raises:
            BPEError: a file is missing or malformed.
        """
        from tokenizers import Tokenizer

        for p in (tokenizer_json, char_mapping):
            if not Path(p).is_file():
                raise BPEError(f"BPE file {p} does not exist")
        try:
            tok = Tokenizer.from_file(str(tokenizer_json))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise BPEError(f"could not load {tokenizer_json}: {e}") from None
        return cls(tok, read_char_mapping(char_mapping))

    @classmethod
    def from_dir(cls, path: str | Path) -> CodeBPE:
        """Load an ``s3_bpe/`` folder (``tokenizer.json`` + ``char_mapping.txt``); a checkpoint's
        ``talker/`` folder or root also works."""
        path = Path(path)
        for cand in (path, path / "s3_bpe", path / "talker" / "s3_bpe"):
            if (cand / TOKENIZER_FILE).is_file() and (cand / MAPPING_FILE).is_file():
                return cls.from_files(cand / TOKENIZER_FILE, cand / MAPPING_FILE)
        raise BPEError(f"no {TOKENIZER_FILE} + {MAPPING_FILE} under {path} (or its s3_bpe/ subfolder)")

    @classmethod
    def default(cls) -> CodeBPE:
        """The tokenizer trained by ``scripts/train_bpe.py`` and committed with the code."""
        return cls.from_dir(ASSET_DIR)

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` and ``char_mapping.txt`` into the folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path / TOKENIZER_FILE))
        write_char_mapping(self.mapping, path / MAPPING_FILE)

    @classmethod
    def train(cls, streams: Iterable[Sequence[int] | np.ndarray], vocab_size: int = MAX_VOCAB, *,
              min_frequency: int = 2, codebook_size: int = CODEBOOK_SIZE,
              max_token_codes: int | None = 64) -> CodeBPE:
        """Train a BPE on code streams (one utterance each).

        Args:
            streams: code sequences in ``[0, codebook_size)``.
            vocab_size: final vocabulary, the 4096 single codes included (at most 32768).
            min_frequency: a pair must occur this often to be merged.
            codebook_size: number of codes.
            max_token_codes: longest run of codes one token may stand for.
        """
        from tokenizers import Tokenizer, models, trainers

        if not codebook_size <= vocab_size <= MAX_VOCAB:
            raise BPEError(f"vocab_size must be in [{codebook_size}, {MAX_VOCAB}], got {vocab_size}")
        mapping = default_char_mapping(codebook_size)
        alphabet = [mapping[i] for i in range(codebook_size)]
        tok = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      initial_alphabet=alphabet, limit_alphabet=codebook_size,
                                      max_token_length=max_token_codes)
        texts = ["".join(mapping[int(c)] for c in check_codes(s, codebook_size)) for s in streams]
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        return cls(tok, mapping)

    # -- coding --------------------------------------------------------------------------------------
    def codes_to_text(self, codes: Any) -> str:
        codes = check_codes(codes, self.codebook_size)
        return "".join(self.mapping[int(c)] for c in codes)

    def encode(self, codes: Any) -> list[int]:
        """Codes [N] -> BPE token ids [L] (``L <= N``).

        Raises:
            CodecError: codes out of range or not 1-D integers.
        """
        text = self.codes_to_text(codes)
        return list(self.tokenizer.encode(text).ids) if text else []

    def token_codes(self, token_id: int) -> np.ndarray:
        """The run of codes one token stands for (used for token-by-token streaming decode).

        Raises:
            BPEError: an id outside the vocabulary or a token that is not made of codes.
        """
        if not 0 <= int(token_id) < self.vocab_size:
            raise BPEError(f"BPE token id {token_id} outside the vocabulary [0, {self.vocab_size})")
        run = self._expand[int(token_id)]
        if run is None:
            raise BPEError(f"BPE token id {token_id} is not an audio token")
        return run

    def decode(self, ids: Iterable[int]) -> np.ndarray:
        """BPE token ids [L] -> codes [N], exactly the codes that were encoded."""
        runs = [self.token_codes(i) for i in ids]
        return np.concatenate(runs) if runs else np.zeros(0, np.int64)
