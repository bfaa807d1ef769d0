"""The talker: a small causal LM that turns text (and the thinker's hidden states) into BPE audio
tokens, in the layout of Ming's ``BailingTalkerForConditionalGeneration``.

Two input channels are summed position by position: the *audio* channel (the prefix, then the
previous audio token) and the *text* channel (the prefix, then the text to speak one token per
step, then ``<text_eos>``, then ``<text_pad>``). Placeholders in the prefix are overwritten with the
projected thinker states (``thinker_to_talker_proj``: 2048 -> 896 in Ming) and the speaker
embedding (``vp_head``: a Conv1d from 192-d). Output ids ``>= len(text tokenizer)`` are BPE audio
tokens; ``<audio_eos>`` ends a piece.

Legend: T thinker states, Dt thinker width, P prefix length, D talker width, V vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SPECIAL_TOKENS = (  # Ming's talker special tokens, in the order our byte tokenizer numbers them
    "<prompt>", "</prompt>", "<thinker_prefix>", "</thinker_prefix>", "<audio_pad>", "<vp>", "</vp>",
    "<audio_bos>", "<audio_eos>", "<text_eos>", "<text_pad>",
)
TOP_K = 20  # Ming's talker sampling
MIN_AUDIO_TOKENS = 10  # <audio_eos> is suppressed for the first 10 tokens


class TalkerError(ValueError):
    """A talker input or checkpoint that cannot be used."""


@dataclass
class TalkerConfig:
    """Talker hyperparameters (a Qwen2 LM plus Ming's talker fields)."""

    hidden_size: int = 896
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    intermediate_size: int = 4864
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    text_vocab_size: int = 151936 + len(SPECIAL_TOKENS)
    """Text tokenizer size, specials included; audio ids start here."""
    audio_vocab_size: int = 32768
    """BPE audio vocabulary."""
    thinker_hidden_size: int = 2048
    """Width of the thinker states fed in (Ming's ``qa_model_hidden_size``)."""
    speaker_dim: int = 192
    """Speaker (voice-print) embedding width (Ming's ``vp_feature_size``, CAM++ x-vectors)."""
    vp_kernel_size: int = 1
    vp_stride: int = 1
    top_k: int = TOP_K
    min_new_tokens: int = MIN_AUDIO_TOKENS
    max_new_tokens: int = 1000  # Ming's hard step limit per piece

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
                        text_vocab_size=256 + len(SPECIAL_TOKENS),
                        thinker_hidden_size=128)  # the tiny thinker's width (omni_agent.model tiny preset)
            return cls(**{**base, **overrides})
        raise TalkerError(f"unknown talker preset {name!r} (tiny, ming-lite-omni-1.5)")

    def qwen2(self) -> Any:
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
            intermediate_size=self.intermediate_size, rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings, tie_word_embeddings=False,
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

    def token_id(self, token: str) -> int:
        return self._special[token]


class _HFTokenizer:
    """Adapter over a checkpoint's ``AutoTokenizer`` (``talker/`` folder)."""

    def __init__(self, tok: Any):
        self.tok = tok

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def token_id(self, token: str) -> int:
        idx = self.tok.convert_tokens_to_ids(token)
        if idx is None or idx == self.tok.unk_token_id:
            raise TalkerError(f"talker tokenizer lacks the special token {token}")
        return int(idx)


class Talker(nn.Module):
    """Qwen2 causal LM over text + BPE audio tokens with thinker and speaker conditioning.

    Args:
        config: hyperparameters.
        tokenizer: text tokenizer (``ByteTokenizer`` for tiny, the checkpoint's otherwise).
    """

    def __init__(self, config: TalkerConfig, tokenizer: Any | None = None):
        super().__init__()
        self._allowed_masks: dict[tuple, torch.Tensor] = {}  # sampling masks, see _allowed
        from transformers import Qwen2ForCausalLM

        self.config = config
        self.tokenizer = tokenizer or ByteTokenizer()
        if len(self.tokenizer) != config.text_vocab_size:
            raise TalkerError(f"tokenizer has {len(self.tokenizer)} tokens, config says {config.text_vocab_size}")
        self.model = Qwen2ForCausalLM(config.qwen2())
        self.thinker_to_talker_proj = nn.Linear(config.thinker_hidden_size, config.hidden_size)
        self.vp_head = nn.Conv1d(config.speaker_dim, config.hidden_size, kernel_size=config.vp_kernel_size,
                                 stride=config.vp_stride, padding=config.vp_kernel_size // 2)
        self.ids = {t: self.tokenizer.token_id(t) for t in SPECIAL_TOKENS}

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def build(cls, preset: str = "tiny", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> Talker:
        """A talker with seeded random weights (there is no trained tiny talker)."""
        torch.manual_seed(seed)
        return cls(TalkerConfig.preset(preset, **overrides)).to(device).eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu") -> Talker:
        """Load a checkpoint's ``talker/`` folder: ``config.json`` (Qwen2 fields + ``vocab_size``,
        ``qa_model_hidden_size``, ``vp_feature_size``...), the tokenizer and ``*.safetensors``.

        Raises:
            TalkerError: the folder lacks the files or the weights do not fit.
        """
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        path = Path(path)
        if (path / "talker").is_dir():
            path = path / "talker"
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise TalkerError(f"no talker config.json under {path}")
        raw = json.loads(cfg_file.read_text())
        tok = _HFTokenizer(AutoTokenizer.from_pretrained(str(path)))
        vocab = int(raw.get("vocab_size", len(tok) + 32768))
        config = TalkerConfig(
            hidden_size=raw.get("hidden_size", 896), num_hidden_layers=raw.get("num_hidden_layers", 24),
            num_attention_heads=raw.get("num_attention_heads", 14),
            num_key_value_heads=raw.get("num_key_value_heads", 2),
            intermediate_size=raw.get("intermediate_size", 4864), rope_theta=raw.get("rope_theta", 1e6),
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6), text_vocab_size=len(tok), audio_vocab_size=vocab - len(tok),
            thinker_hidden_size=raw.get("qa_model_hidden_size", 2048), speaker_dim=raw.get("vp_feature_size", 192),
            vp_kernel_size=raw.get("vp_kernel_size", 1), vp_stride=raw.get("vp_stride", 1),
        )
        talker = cls(config, tok)
        state: dict[str, torch.Tensor] = {}
        for f in sorted(path.glob("*.safetensors")):
            state.update(load_file(str(f)))
        if not state:
            raise TalkerError(f"no *.safetensors weights under {path}")
        missing, unexpected = talker.load_state_dict(state, strict=False)
        if missing:
            raise TalkerError(f"talker weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        return talker.to(device).eval()

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    # -- inputs ---------------------------------------------------------------------------------------
    @property
    def audio_offset(self) -> int:
        """Id of BPE audio token 0 in the talker vocabulary."""
        return self.config.text_vocab_size

    def prefix(self, text: str, hidden: torch.Tensor | None, speaker: torch.Tensor | None
               ) -> tuple[torch.Tensor, list[int]]:
        """Prefill embeddings [1, P, D] and the text tokens left for later steps.

        Raises:
            TalkerError: empty text or hidden states of the wrong width.
        """
        if not text or not text.strip():
            raise TalkerError("the talker needs non-empty text to speak")
        cfg, ids = self.config, self.ids
        emb = self.model.get_input_embeddings()
        dev = emb.weight.device
        if hidden is not None:
            if hidden.ndim != 2 or hidden.shape[1] != cfg.thinker_hidden_size:
                raise TalkerError(f"thinker states must be [T, {cfg.thinker_hidden_size}], got {tuple(hidden.shape)}")
        n_thinker = 0 if hidden is None else hidden.shape[0]
        text_ids = self.tokenizer.encode(text)
        head = [ids["<prompt>"], ids["</prompt>"], ids["<thinker_prefix>"], *[ids["<audio_pad>"]] * n_thinker,
                ids["</thinker_prefix>"], ids["<vp>"], ids["<audio_pad>"], ids["</vp>"]]
        audio_ch = torch.tensor(head + [ids["<audio_bos>"]], device=dev)  # [P]
        text_ch = torch.tensor(head + text_ids[:1], device=dev)  # [P]
        x = emb(audio_ch) + emb(text_ch)  # [P, D]
        if hidden is not None and n_thinker:
            x[3:3 + n_thinker] = self.thinker_to_talker_proj(hidden.to(dev, x.dtype))  # [T, D]
        if speaker is not None:
            if speaker.shape[-1] != cfg.speaker_dim:
                raise TalkerError(f"speaker embedding must be {cfg.speaker_dim}-d, got {tuple(speaker.shape)}")
            vp = self.vp_head(speaker.reshape(1, cfg.speaker_dim, 1).to(dev, x.dtype))  # [1, D, 1]
            x[n_thinker + 5] = vp[0, :, 0]
        rest = text_ids[1:] + [ids["<text_eos>"]]
        return x[None], rest

    # -- sampling -------------------------------------------------------------------------------------
    def _allowed(self, vocab: int, eos_ok: bool, device: torch.device) -> torch.Tensor:
        """The additive mask ``[V]`` (0 allowed, -inf not); two per vocabulary, built once, not per token."""
        key = (vocab, eos_ok, str(device))
        masks = self._allowed_masks
        if key not in masks:
            allowed = torch.full((vocab,), float("-inf"), device=device)
            allowed[self.audio_offset:] = 0.0
            if eos_ok:
                allowed[self.ids["<audio_eos>"]] = 0.0
            masks[key] = allowed
        return masks[key]

    def sample(self, logits: torch.Tensor, step: int, generator: torch.Generator | None = None) -> int:
        """Sample one id from last-position logits [V]: audio tokens and ``<audio_eos>`` only,
        ``<audio_eos>`` suppressed for the first ``min_new_tokens`` steps, top-k (20)."""
        cfg = self.config
        logits = logits.float() + self._allowed(logits.shape[-1], step >= cfg.min_new_tokens, logits.device)
        top = torch.topk(logits, cfg.top_k)
        probs = torch.softmax(top.values, dim=-1)
        pick = torch.multinomial(probs, 1, generator=generator)
        return int(top.indices[pick])

    @torch.no_grad()
    def stream(self, text: str, *, hidden: torch.Tensor | None = None, speaker: torch.Tensor | None = None,
               max_new_tokens: int | None = None, seed: int | None = None) -> Iterator[int]:
        """Generate BPE audio token ids (``0..audio_vocab_size-1``) for one piece, one per step,
        with a KV cache; stops at ``<audio_eos>`` or ``max_new_tokens``."""
        cfg, ids = self.config, self.ids
        limit = min(max_new_tokens or cfg.max_new_tokens, cfg.max_new_tokens)
        x, rest = self.prefix(text, hidden, speaker)
        gen = torch.Generator(device="cpu").manual_seed(seed if seed is not None else 0)
        fast = _FastDecoder.supports(self.model)
        threads = _step_threads(x.device, cfg.hidden_size)
        with _torch_threads(threads):
            if fast:
                dec = _FastDecoder(self.model, x.shape[1] + limit)
                logits = dec(x[0])
            else:
                from transformers import DynamicCache

                cache = DynamicCache()
                logits = self.model(inputs_embeds=x, past_key_values=cache, use_cache=True).logits[0, -1]
        emb = self.model.get_input_embeddings().weight  # [V, D]
        pos = x.shape[1]
        for step in range(limit):
            with _torch_threads(threads):
                tok = self.sample(logits.cpu(), step, gen)
            if tok == ids["<audio_eos>"]:
                return
            yield tok - self.audio_offset  # the consumer may resume us on another thread
            text_tok = rest.pop(0) if rest else ids["<text_pad>"]
            with _torch_threads(threads):
                nxt = emb[tok] + emb[text_tok]  # [D]
                if fast:
                    logits = dec(nxt[None])
                else:
                    logits = self.model(inputs_embeds=nxt[None, None], past_key_values=cache, use_cache=True,
                                        position_ids=torch.tensor([[pos]], device=nxt.device)).logits[0, -1]
            pos += 1


SMALL_TALKER_WIDTH = 256  # at or below this width a CPU step is too small to split across threads


def _step_threads(device: torch.device, width: int) -> int | None:
    """Intra-op threads for a talker step: one for a small model on CPU (its ops are microseconds
    long; a second OpenMP/MKL thread only spins against the other sessions' steps on shared cores,
    ~1.7x the CPU time per token), else leave torch's setting alone (``None``)."""
    return 1 if device.type == "cpu" and width <= SMALL_TALKER_WIDTH else None


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` intra-op threads, restoring the previous count after (it is a
    per-thread OpenMP setting, but MKL's is process-wide, so it is never left changed)."""
    prev = torch.get_num_threads()
    if n is None or n == prev:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class _FastDecoder:
    """One sequence through a Qwen2 causal LM with a preallocated KV cache, in plain tensor ops.

    The same arithmetic as ``Qwen2ForCausalLM`` (RMSNorm, rotary, grouped-query attention, SwiGLU),
    without its per-call Python machinery (module hooks, masks, cache objects, output classes), which
    costs several times the maths itself for the tiny talker. Returns last-position logits [V].
    """

    def __init__(self, model: Any, max_len: int):
        cfg = model.config
        self.nh, self.kvh = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.nh
        self.eps = cfg.rms_norm_eps
        self.scale = self.hd ** -0.5
        base = model.model
        w = base.embed_tokens.weight
        self.layers = [_layer_weights(layer) for layer in base.layers]
        self.norm = base.norm.weight
        self.head = model.lm_head.weight
        cos, sin = base.rotary_emb(w[:1], torch.arange(max_len, device=w.device)[None])  # [1, L, hd]
        self.cos, self.sin = cos[0].to(w.dtype), sin[0].to(w.dtype)
        self.k = [w.new_zeros(self.kvh, max_len, self.hd) for _ in self.layers]
        self.v = [w.new_zeros(self.kvh, max_len, self.hd) for _ in self.layers]
        self.pos = 0

    @staticmethod
    def supports(model: Any) -> bool:
        cfg = model.config
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
        return (type(model).__name__ == "Qwen2ForCausalLM" and rope.get("rope_type", "default") == "default"
                and types == {"full_attention"} and not getattr(cfg, "use_sliding_window", False)
                and getattr(cfg, "hidden_act", "silu") == "silu")

    def _rope(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = t.shape[-1] // 2
        rot = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
        return t * cos + rot * sin

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings [S, D] at the next S positions -> logits [V] of the last one."""
        F = torch.nn.functional
        s, p0 = x.shape[0], self.pos
        p1 = p0 + s
        cos, sin = self.cos[p0:p1], self.sin[p0:p1]  # [S, hd]
        nh, kvh, hd = self.nh, self.kvh, self.hd
        d = x.shape[-1]
        for (ln1, wq, bq, wk, bk, wv, bv, wo, ln2, wg, wu, wd), kc, vc in zip(self.layers, self.k, self.v, strict=True):
            h = F.rms_norm(x, (d,), ln1, self.eps)
            q = F.linear(h, wq, bq).view(s, nh, hd).transpose(0, 1)  # [nh, S, hd]
            k = F.linear(h, wk, bk).view(s, kvh, hd).transpose(0, 1)  # [kvh, S, hd]
            kc[:, p0:p1] = self._rope(k, cos, sin)
            vc[:, p0:p1] = F.linear(h, wv, bv).view(s, kvh, hd).transpose(0, 1)
            q = self._rope(q, cos, sin)
            keys, vals = kc[:, :p1], vc[:, :p1]  # [kvh, L, hd]
            if s == 1:  # one query: grouped heads against their shared key/value head, no mask
                att = torch.softmax((q.view(kvh, nh // kvh, hd) @ keys.transpose(1, 2)) * self.scale, dim=-1)
                o = (att @ vals).reshape(1, nh * hd)
            else:  # prefill from position 0: causal
                rep = nh // kvh
                o = F.scaled_dot_product_attention(q, keys.repeat_interleave(rep, 0), vals.repeat_interleave(rep, 0),
                                                   is_causal=p0 == 0, scale=self.scale)
                o = o.transpose(0, 1).reshape(s, nh * hd)
            x = x + F.linear(o, wo)
            h = F.rms_norm(x, (d,), ln2, self.eps)
            x = x + F.linear(F.silu(F.linear(h, wg)) * F.linear(h, wu), wd)
        self.pos = p1
        return F.linear(F.rms_norm(x[-1], (d,), self.norm, self.eps), self.head)


def _layer_weights(layer: Any) -> tuple[torch.Tensor | None, ...]:
    a, m = layer.self_attn, layer.mlp
    return (layer.input_layernorm.weight, a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias,
            a.v_proj.weight, a.v_proj.bias, a.o_proj.weight, layer.post_attention_layernorm.weight,
            m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight)
