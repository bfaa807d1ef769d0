"""The talker: Ming's ``BailingTalkerForConditionalGeneration`` (a Qwen2 LM over text + BPE audio
tokens) with Ming's prefix, decode loop and sampling.

Two channels are embedded and summed position by position. For one sentence Ming builds (T thinker
states, ``pt`` prompt-text tokens, ``t`` text tokens, ``w`` BPE tokens of the voice prompt's codes)::

    audio: <prompt></prompt> <thinker_prefix><audio_pad>*T</thinker_prefix> <vp><audio_pad></vp> <audio_bos> wav*w
    text:  <prompt></prompt> <thinker_prefix><audio_pad>*T</thinker_prefix> <vp><audio_pad></vp>
           prompt_text*pt text*t <text_eos> <text_pad>*(w - pt - t)

The positions of the thinker's ``<audio_pad>``s are overwritten with ``thinker_to_talker_proj`` of
the thinker states (``thinker_reply_part``), the ``<audio_pad>`` inside ``<vp>`` with ``vp_head`` of
the voice's speaker vector. Each later step feeds the sampled token on the audio channel and
``<text_pad>`` on the text channel. Sampling (Ming's ``sample``): keep the top 20 logits of the
full vocabulary, then, for the first 10 steps, also remove id 151666; draw from the softmax.
Stop at ``<audio_eos>`` or after 1000 steps. A sampled id minus ``len(tokenizer)`` is a BPE audio
token; the s3 BPE expands it to speech codes.

Legend: T thinker states, Dt thinker width, P prefix length, D talker width, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audio.bpe import CodeBPE
from audio.talker_decode import FastDecoder, step_threads, torch_threads
from audio.voices import VoicePrompt

SPECIAL_TOKENS = (  # Ming's talker special tokens, in the order the tiny byte tokenizer numbers them
    "<prompt>", "</prompt>", "<thinker_prefix>", "</thinker_prefix>", "<audio_pad>", "<vp>", "</vp>",
    "<audio_bos>", "<audio_eos>", "<text_eos>", "<text_pad>",
)
TOP_K = 20  # Ming's sample(topk=20)
MIN_AUDIO_TOKENS = 10  # Ming's generate(min_new_token=10)
MAX_STEPS = 1000  # Ming's generate: ``while step < 1000``
MING_REFUSED_ID = 151666
"""The id Ming's ``sample`` removes for the first 10 steps: ``generate`` calls it without ``eos_id``,
so the default 151666 applies whatever the tokenizer numbers ``<audio_eos>``."""


class TalkerError(ValueError):
    """A talker input or checkpoint that cannot be used."""


@dataclass
class TalkerConfig:
    """Talker hyperparameters (a Qwen2 LM plus Ming's ``BailingTalkerConfig`` fields)."""

    hidden_size: int = 896
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    intermediate_size: int = 4864
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = True
    """Qwen2.5-0.5B ties the head to the embedding; the checkpoint then stores only the embedding."""
    text_vocab_size: int = 151677
    """Text tokenizer size, specials included; audio ids start here."""
    audio_vocab_size: int = 32768
    """BPE audio vocabulary (Ming's root config: vocab_size 184445 = 151677 + 32768)."""
    thinker_hidden_size: int = 2048
    """Width of the thinker states fed in (Ming's ``qa_model_hidden_size``)."""
    speaker_dim: int = 192
    """Speaker (voice-print) vector width (Ming's ``vp_feature_size``, CAM++ x-vectors)."""
    vp_kernel_size: int = 1
    vp_stride: int = 1
    refused_id: int | None = MING_REFUSED_ID
    """Id removed for the first 10 steps; ``None``: the tokenizer's ``<audio_eos>`` (the tiny talker)."""
    audio_only: bool = False
    """Demo talker only: draw only audio ids and ``<audio_eos>`` (random weights would often draw
    text ids, which have no sound). Ming does not mask them; its trained talker does not draw them."""

    @property
    def vocab_size(self) -> int:
        return self.text_vocab_size + self.audio_vocab_size

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TalkerConfig:
        """``ming-lite-omni-1.5`` (896 wide, 24 layers) or ``tiny`` (test size, same structure)."""
        if name == "ming-lite-omni-1.5":
            return cls(**overrides)
        if name == "tiny":
            base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=128, max_position_embeddings=4096,
                        text_vocab_size=256 + len(SPECIAL_TOKENS), refused_id=None, audio_only=True,
                        thinker_hidden_size=128)  # the tiny thinker's width (omni_agent.model tiny preset)
            return cls(**{**base, **overrides})
        raise TalkerError(f"unknown talker preset {name!r} (tiny, ming-lite-omni-1.5)")

    def qwen2(self) -> Any:
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
            intermediate_size=self.intermediate_size, rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings, tie_word_embeddings=self.tie_word_embeddings,
        )


class ByteTokenizer:
    """Text tokenizer of the tiny talker: UTF-8 bytes, then Ming's talker special tokens."""

    def __init__(self) -> None:
        self._special = {tok: 256 + i for i, tok in enumerate(SPECIAL_TOKENS)}

    def __len__(self) -> int:
        return 256 + len(SPECIAL_TOKENS)

    def encode(self, text: str) -> list[int]:
        if text in self._special:
            return [self._special[text]]
        return list(text.encode("utf-8"))


@dataclass
class Prefix:
    """The first step's inputs: both channels' ids and where the thinker states and voice print go."""

    audio_ids: list[int]
    text_ids: list[int]
    thinker_at: int
    n_thinker: int
    vp_at: int


class Talker(nn.Module):
    """Qwen2 causal LM over text + BPE audio tokens with thinker and voice conditioning.

    Args:
        config: hyperparameters.
        tokenizer: text tokenizer with Ming's special tokens (``ByteTokenizer`` for tiny; the
            checkpoint's ``AutoTokenizer`` otherwise); ``encode(text) -> ids`` and ``len()``.
        bpe: the s3 BPE over speech codes (encodes the voice prompt, decodes sampled tokens).
    """

    def __init__(self, config: TalkerConfig, tokenizer: Any | None = None, bpe: CodeBPE | None = None):
        super().__init__()
        from transformers import Qwen2ForCausalLM

        self.config = config
        self.tokenizer = tokenizer or ByteTokenizer()
        self.bpe = bpe or CodeBPE.default()
        if len(self.tokenizer) != config.text_vocab_size:
            raise TalkerError(f"tokenizer has {len(self.tokenizer)} tokens, config says {config.text_vocab_size}")
        self.model = Qwen2ForCausalLM(config.qwen2())
        self.thinker_to_talker_proj = nn.Linear(config.thinker_hidden_size, config.hidden_size)
        self.vp_head = nn.Conv1d(config.speaker_dim, config.hidden_size, kernel_size=config.vp_kernel_size,
                                 stride=config.vp_stride, padding=config.vp_kernel_size // 2)
        self.ids = {t: self._special_id(t) for t in SPECIAL_TOKENS}
        self.refused_id = self.ids["<audio_eos>"] if config.refused_id is None else config.refused_id
        if not 0 <= self.refused_id < config.vocab_size:
            raise TalkerError(f"refused id {self.refused_id} outside the vocabulary of {config.vocab_size} "
                              "(Ming's sampling removes id 151666 for its first 10 steps)")

    def _special_id(self, token: str) -> int:
        ids = self.tokenizer.encode(token)
        if len(ids) != 1 or ids[0] >= self.config.text_vocab_size:
            raise TalkerError(f"talker tokenizer does not hold the special token {token} (encodes to {ids[:4]})")
        return int(ids[0])

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def build(cls, preset: str = "tiny", *, seed: int = 0, device: str = "cpu", bpe: CodeBPE | None = None,
              **overrides: Any) -> Talker:
        """A talker with seeded random weights (there is no trained tiny talker)."""
        torch.manual_seed(seed)
        return cls(TalkerConfig.preset(preset, **overrides), bpe=bpe).to(device).eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None) -> Talker:
        """Load the talker from Ming's release layout (see ``audio.talker_checkpoint``)."""
        from audio.talker_checkpoint import load_talker

        return load_talker(path, device=device, dtype=dtype)

    @property
    def audio_offset(self) -> int:
        """Id of BPE audio token 0 in the talker vocabulary (Ming's ``len(self.tokenizer)``)."""
        return self.config.text_vocab_size

    # -- prefix --------------------------------------------------------------------------------------
    def prefix_ids(self, text: str, voice: VoicePrompt, n_thinker: int = 0) -> Prefix:
        """Both channels of the first step, as Ming's ``omni_audio_generation`` (+ ``_func``) builds them.

        Raises:
            TalkerError: empty text, or text too long to sit under the voice prompt's audio tokens
                (Ming's layout has no room for it: its channels would differ in length).
        """
        if not text or not text.strip():
            raise TalkerError("the talker needs non-empty text to speak")
        ids, enc = self.ids, self.tokenizer.encode
        prompt = [ids["<prompt>"], ids["</prompt>"]]
        thinker = [ids["<thinker_prefix>"], *[ids["<audio_pad>"]] * n_thinker, ids["</thinker_prefix>"]]
        vp = [ids["<vp>"], ids["<audio_pad>"], ids["</vp>"]]
        wav = [t + self.audio_offset for t in self.bpe.encode(voice.prompt_tokens)]
        prompt_text, words = list(enc(voice.prompt_text)), list(enc(text))
        room = len(wav) - len(prompt_text) - len(words)
        if room < 0:
            raise TalkerError(f"text too long for voice {voice.name!r}: {len(words)} text + {len(prompt_text)} "
                              f"prompt-text tokens > {len(wav)} prompt audio tokens; speak a shorter sentence")
        head = prompt + thinker + vp
        return Prefix(audio_ids=head + [ids["<audio_bos>"]] + wav,
                      text_ids=head + prompt_text + words + [ids["<text_eos>"]] + [ids["<text_pad>"]] * room,
                      thinker_at=len(prompt) + 1, n_thinker=n_thinker, vp_at=len(prompt) + len(thinker) + 1)

    def embed_prefix(self, p: Prefix, voice: VoicePrompt, hidden: torch.Tensor | None) -> torch.Tensor:
        """Prefill embeddings [1, P, D] (Ming's ``forward`` + ``encode_audio_segments`` at step 0)."""
        emb = self.model.get_input_embeddings()
        w = emb.weight
        x = emb(torch.tensor(p.audio_ids, device=w.device)) + emb(torch.tensor(p.text_ids, device=w.device))
        # Ming casts vp_emb to bf16 for its bf16 model; the same rounding keeps fp32 runs comparable
        vp_in = voice.vp_emb.reshape(1, -1, 1).to(torch.bfloat16).to(w.device, w.dtype)  # [1, 192, 1]
        x[p.vp_at] = self.vp_head(vp_in)[0, :, 0]
        if p.n_thinker:
            x[p.thinker_at:p.thinker_at + p.n_thinker] = self.thinker_to_talker_proj(hidden.to(w.device, w.dtype))
        return x[None]

    def _check_hidden(self, hidden: torch.Tensor | None) -> int:
        if hidden is None:
            return 0
        if hidden.ndim != 2 or hidden.shape[1] != self.config.thinker_hidden_size:
            raise TalkerError(f"thinker states must be [T, {self.config.thinker_hidden_size}], got {tuple(hidden.shape)}")
        return hidden.shape[0]

    # -- sampling -------------------------------------------------------------------------------------
    def sample(self, logits: torch.Tensor, step: int, generator: torch.Generator | None = None) -> int:
        """Ming's ``sample``: top-20 of the full vocabulary, then the refused id removed while
        ``step < 10``, then one draw from the softmax (the same calls, so a seeded generator
        reproduces Ming's global-generator draws)."""
        logits = logits.float().reshape(1, -1).clone()  # Ming's logits are fp32 (transformers 4.45 upcasts)
        if self.config.audio_only:  # the random-weight demo talker (see TalkerConfig.audio_only)
            keep = logits[0, self.ids["<audio_eos>"]].item()
            logits[0, :self.audio_offset] = -float("inf")
            logits[0, self.ids["<audio_eos>"]] = keep
        remove = logits < torch.topk(logits, TOP_K)[0][..., -1, None]
        if step < MIN_AUDIO_TOKENS:
            remove[0][self.refused_id] = True
        logits[remove] = -float("inf")
        return int(torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator))

    # -- decoding -------------------------------------------------------------------------------------
    def _stepper(self, x: torch.Tensor, max_steps: int) -> tuple[Any, torch.Tensor]:
        """A callable ``(embeddings [S, D]) -> logits [V]`` with its KV cache, after the prefill."""
        if FastDecoder.supports(self.model):
            dec = FastDecoder(self.model, x.shape[1] + max_steps + 1)
            return dec, dec(x[0])
        from transformers import DynamicCache

        cache, pos = DynamicCache(), [x.shape[1]]

        def step(e: torch.Tensor) -> torch.Tensor:
            out = self.model(inputs_embeds=e[None], past_key_values=cache, use_cache=True,
                             position_ids=torch.tensor([[pos[0]]], device=e.device)).logits[0, -1]
            pos[0] += 1
            return out

        return step, self.model(inputs_embeds=x, past_key_values=cache, use_cache=True).logits[0, -1]

    @torch.no_grad()
    def generate(self, text: str, voice: VoicePrompt, *, hidden: torch.Tensor | None = None,
                 seed: int | None = 0, max_steps: int = MAX_STEPS,
                 generator: torch.Generator | None = None) -> Iterator[int]:
        """Ming's ``generate`` for one sentence: yields raw talker ids (audio ids are
        ``>= audio_offset``) until ``<audio_eos>`` or ``max_steps`` (Ming: 1000).

        Args:
            seed: seeds a fresh generator (Ming: ``torch.manual_seed(seed)`` before its call).
            generator: use this generator instead (it advances across calls).
        """
        n_thinker = self._check_hidden(hidden)
        p = self.prefix_ids(text, voice, n_thinker)
        x = self.embed_prefix(p, voice, hidden)
        max_steps = min(max_steps, MAX_STEPS)
        threads = step_threads(x.device, self.config.hidden_size)
        with torch_threads(threads):
            step_fn, logits = self._stepper(x, max_steps)
        if generator is None:
            generator = torch.Generator(device=logits.device).manual_seed(0 if seed is None else seed)
        emb = self.model.get_input_embeddings().weight  # [V, D]
        eos, pad = self.ids["<audio_eos>"], self.ids["<text_pad>"]
        for step in range(max_steps):
            with torch_threads(threads):
                tok = self.sample(logits, step, generator)
            if tok == eos:
                return
            yield tok  # the consumer may resume us on another thread
            if step + 1 == max_steps:
                return
            with torch_threads(threads):
                logits = step_fn((emb[tok] + emb[pad])[None])

    @torch.no_grad()
    def forced_logits(self, text: str, voice: VoicePrompt, tokens: list[int], *,
                      hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [len(tokens) + 1, V] of the prefix and of each step after feeding ``tokens``
        (what ``generate`` samples from when it draws those tokens)."""
        p = self.prefix_ids(text, voice, self._check_hidden(hidden))
        step_fn, logits = self._stepper(self.embed_prefix(p, voice, hidden), len(tokens))
        emb = self.model.get_input_embeddings().weight
        out = [logits.float()]
        for tok in tokens:
            out.append(step_fn((emb[tok] + emb[self.ids["<text_pad>"]])[None]).float())
        return torch.stack(out)

    def token_codes(self, token: int) -> np.ndarray:
        """A sampled talker id -> its speech codes (Ming: ``s3bpe.decode([id - len(tokenizer)])``).

        Raises:
            TalkerError: a text id was sampled (Ming would fail in its BPE decode too).
        """
        bpe_id = token - self.audio_offset
        if bpe_id < 0:
            raise TalkerError(f"the talker sampled text token {token}, not an audio token")
        return self.bpe.token_codes(bpe_id)

    def speak(self, text: str, voice: VoicePrompt, *, hidden: torch.Tensor | None = None, seed: int | None = 0,
              max_steps: int = MAX_STEPS) -> Iterator[np.ndarray]:
        """Speech codes per sampled token, streamed (Ming's ``omni_audio_generation_func``)."""
        tokens = self.generate(text, voice, hidden=hidden, seed=seed, max_steps=max_steps)
        try:
            for tok in tokens:
                yield self.token_codes(tok)
        finally:
            tokens.close()
