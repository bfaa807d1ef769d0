"""Ming's ``audio_detokenizer_stream.yaml`` read without running it.

Ming builds its detokenizer with hyperpyyaml (``!new:module.Class`` instantiates, ``!ref <key>``
refers to a top-level value, with simple arithmetic such as ``!ref <chunk_size> * <token_mel_ratio>``).
We read the same file with PyYAML, resolve the references, check that each ``!new:`` names the class
this project implements (Ming's ``audio_detokenizer.*`` path or CosyVoice's ``cosyvoice.*`` one), and
fill typed configs with Ming's constructor defaults for every argument the file leaves out. A class or
an option we do not implement is an error that names it; nothing is rewritten.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from audio.codec.base import CodecError


def one_line(err: BaseException, limit: int = 160) -> str:
    """An exception's text on one line, shortened."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _New:
    """A ``!new:`` / ``!name:`` / ``!apply:`` node: the dotted path and its arguments."""

    kind: str
    path: str
    kwargs: dict
    args: list


class _Ref(str):
    """The text of a ``!ref`` node, resolved after loading."""


class _Loader(yaml.SafeLoader):
    pass


def _tagged(kind: str):
    def construct(loader: _Loader, suffix: str, node: yaml.Node) -> _New:
        if isinstance(node, yaml.MappingNode):
            return _New(kind, suffix, loader.construct_mapping(node, deep=True), [])
        if isinstance(node, yaml.SequenceNode):
            return _New(kind, suffix, {}, loader.construct_sequence(node, deep=True))
        return _New(kind, suffix, {}, [] if node.value in ("", None) else [loader.construct_scalar(node)])
    return construct


for _kind in ("new", "name", "apply"):
    _Loader.add_multi_constructor(f"!{_kind}:", _tagged(_kind))
_Loader.add_constructor("!ref", lambda loader, node: _Ref(loader.construct_scalar(node)))

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.USub: operator.neg}


def _arith(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.operand))
    raise ValueError("only numbers and + - * / // % are allowed")


def _resolve(value: Any, top: dict, seen: tuple = ()) -> Any:
    if isinstance(value, _Ref):
        keys = re.findall(r"<([^<>]+)>", value)
        for k in keys:
            if k not in top:
                raise CodecError(f"detokenizer yaml: !ref {value!r} names {k!r}, which is not a top-level key")
            if k in seen:
                raise CodecError(f"detokenizer yaml: circular !ref through {k!r}")
        if re.fullmatch(r"\s*<[^<>]+>\s*", value):
            return _resolve(top[keys[0]], top, seen + (keys[0],))
        text = re.sub(r"<([^<>]+)>", lambda m: repr(_resolve(top[m.group(1)], top, seen + (m.group(1),))), value)
        try:
            return _arith(ast.parse(text, mode="eval"))
        except (SyntaxError, ValueError) as e:
            raise CodecError(f"detokenizer yaml: cannot evaluate !ref {value!r} ({e})") from None
    if isinstance(value, _New):
        return _New(value.kind, value.path, _resolve(value.kwargs, top, seen), _resolve(value.args, top, seen))
    if isinstance(value, dict):
        return {k: _resolve(v, top, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, top, seen) for v in value]
    return value


def _expect(node: Any, where: str, *classes: str) -> dict:
    """The kwargs of a ``!new:`` node whose class path ends with one of ``classes``."""
    if not isinstance(node, _New) or node.kind != "new":
        raise CodecError(f"detokenizer yaml: {where} must be a !new: object, got {type(node).__name__}")
    if not any(node.path == c or node.path.endswith("." + c) for c in classes):
        raise CodecError(f"detokenizer yaml: {where} is {node.path}; implemented: {', '.join(classes)}")
    return node.kwargs


def _refuse(where: str, name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise CodecError(f"detokenizer yaml: {where}.{name}={value!r} is not implemented (supported: {allowed})")


@dataclass
class EncoderConfig:
    """``UpsampleConformerEncoder`` (Ming hard-codes 512 channels, lookahead 3 and 4 upsampled layers)."""

    input_size: int = 512
    output_size: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 6
    activation: str = "swish"
    macaron_style: bool = True
    normalize_before: bool = True
    key_bias: bool = True
    static_chunk_size: int = 0
    up_stride: int = 2  # upsample_encoder: 2, upsample_encoder_new_mel: 1


@dataclass
class EstimatorConfig:
    """``CausalConditionalDecoder``: the U-Net of the flow-matching ODE."""

    in_channels: int = 320
    out_channels: int = 80
    channels: tuple[int, ...] = (256, 256)
    attention_head_dim: int = 64
    n_blocks: int = 1
    num_mid_blocks: int = 2
    num_heads: int = 4
    act_fn: str = "snake"
    static_chunk_size: int = 50


@dataclass
class FlowConfig:
    """``CausalMaskedDiffWithXvec`` + ``CausalConditionalCFM``."""

    encoder: EncoderConfig
    estimator: EstimatorConfig
    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 4096
    input_frame_rate: int = 50
    token_mel_ratio: int = 2
    pre_lookahead_len: int = 3
    inference_cfg_rate: float = 0.7
    t_scheduler: str = "cosine"


@dataclass
class HiftConfig:
    """``HiFTGenerator`` with its ``ConvRNNF0Predictor``."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10
    upsample_rates: tuple[int, ...] = (8, 8)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16)
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_in_channels: int = 80
    f0_cond_channels: int = 512
    f0_num_class: int = 1


@dataclass
class DetokConfig:
    flow: FlowConfig
    hift: HiftConfig
    sample_rate: int


def _fill(cls: type, kw: dict, names: dict[str, str] | None = None, **extra: Any) -> Any:
    """``cls`` from yaml kwargs (renamed by ``names``), unknown training-only keys ignored."""
    fields = cls.__dataclass_fields__
    out = dict(extra)
    for key, value in kw.items():
        name = (names or {}).get(key, key)
        if name in fields and name not in out:
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            out[name] = value
    return cls(**out)


def parse_detok_yaml(path: str | Path) -> DetokConfig:
    """Read ``audio_detokenizer_stream.yaml`` into typed configs.

    Raises:
        CodecError: unreadable yaml, a missing ``flow``/``hift`` entry, or a class/option not implemented.
    """
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CodecError(f"{path}: not a readable detokenizer yaml ({type(e).__name__}: {one_line(e)})") from None
    if not isinstance(raw, dict) or "flow" not in raw or "hift" not in raw:
        raise CodecError(f"{path}: a detokenizer yaml needs top-level 'flow' and 'hift' entries")
    top = _resolve(raw, raw)
    flow = _expect(top["flow"], "flow", "flow.flow.CausalMaskedDiffWithXvec")
    enc_node = flow.get("encoder")
    enc = _expect(enc_node, "flow.encoder", "upsample_encoder_new_mel.UpsampleConformerEncoder",
                  "upsample_encoder.UpsampleConformerEncoder")
    for name, default, allowed in (("input_layer", "conv2d", ("linear",)),
                                   ("pos_enc_layer_type", "rel_pos", ("rel_pos_espnet",)),
                                   ("selfattention_layer_type", "rel_selfattn", ("rel_selfattn",)),
                                   ("use_cnn_module", True, (False,)), ("use_dynamic_chunk", False, (False,))):
        _refuse("flow.encoder", name, enc.get(name, default), allowed)
    enc_cfg = _fill(EncoderConfig, enc, {"activation_type": "activation"},
                    up_stride=1 if enc_node.path.endswith("upsample_encoder_new_mel.UpsampleConformerEncoder") else 2)
    if enc_cfg.output_size != 512 or enc_cfg.input_size != 512:
        raise CodecError("detokenizer yaml: Ming's UpsampleConformerEncoder hard-codes 512 channels; "
                         f"got input_size={enc_cfg.input_size}, output_size={enc_cfg.output_size}")
    cfm = _expect(flow.get("decoder"), "flow.decoder", "flow.flow_matching.CausalConditionalCFM")
    params = cfm.get("cfm_params", {})
    if isinstance(params, _New):  # !new:omegaconf.DictConfig {content: {...}}
        params = params.kwargs.get("content", params.args[0] if params.args else {})
    _refuse("flow.decoder.cfm_params", "solver", params.get("solver", "euler"), ("euler",))
    est = _expect(cfm.get("estimator"), "flow.decoder.estimator", "flow.decoder.CausalConditionalDecoder")
    _refuse("flow.decoder.estimator", "act_fn", est.get("act_fn", "snake"), ("gelu", "gelu-approximate"))
    flow_cfg = _fill(FlowConfig, flow, encoder=enc_cfg, estimator=_fill(EstimatorConfig, est),
                     inference_cfg_rate=float(params.get("inference_cfg_rate", 0.7)),
                     t_scheduler=str(params.get("t_scheduler", "cosine")))
    _refuse("flow", "pre_lookahead_len", flow_cfg.pre_lookahead_len, (3,))  # Ming's layer hard-codes 3
    if flow_cfg.output_size != 80 or flow_cfg.estimator.out_channels != 80:
        raise CodecError("detokenizer yaml: Ming's flow solver hard-codes 80 mel bins")
    hift = _expect(top["hift"], "hift", "hifigan.generator.HiFTGenerator")
    f0 = _expect(hift.get("f0_predictor"), "hift.f0_predictor", "hifigan.f0_predictor.ConvRNNF0Predictor")
    istft = hift.get("istft_params", {"n_fft": 16, "hop_len": 4})
    hift_cfg = _fill(HiftConfig, hift, n_fft=int(istft["n_fft"]), hop_len=int(istft["hop_len"]),
                     f0_in_channels=int(f0.get("in_channels", 80)),
                     f0_cond_channels=int(f0.get("cond_channels", 512)), f0_num_class=int(f0.get("num_class", 1)))
    _refuse("hift", "sampling_rate", hift_cfg.sampling_rate, (24000,))  # SineGen2 (24 kHz) only
    sample_rate = int(top.get("sample_rate", hift_cfg.sampling_rate))
    return DetokConfig(flow_cfg, hift_cfg, sample_rate)
