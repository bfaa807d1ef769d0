"""Grouped MoE (omni_agent.model.moe) equals the per-expert loop; packing keeps names and memory."""

from __future__ import annotations

import pytest
import torch

from omni_agent.model.bailing_moe import MoE, init_weights
from omni_agent.model.config import LLMConfig
from omni_agent.model.moe import grouped_mm_supported, resolve_impl
from omni_agent.model.thinker import Thinker


def _moe(dtype: torch.dtype = torch.float32) -> MoE:
    cfg = LLMConfig(hidden_size=64, num_experts=8, num_experts_per_tok=3, moe_intermediate_size=32,
                    num_shared_experts=2)
    torch.manual_seed(0)
    moe = MoE(cfg)
    init_weights(moe, 0.05)
    return moe.to(dtype)


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 64, generator=g).to(dtype)
    modality = torch.randint(0, 3, (3, 11), generator=g)  # text, image and audio routers all used
    return x, modality


def _run(moe: MoE, impl: str, x: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
    moe.impl = impl
    with torch.no_grad():
        return moe(x, modality)


@pytest.mark.parametrize("impl", ["grouped_mm", "sorted", "auto"])
def test_grouped_equals_loop_fp32(impl: str) -> None:
    moe = _moe()
    x, modality = _inputs()
    ref = _run(moe, "loop", x, modality)
    torch.testing.assert_close(_run(moe, impl, x, modality), ref, atol=1e-5, rtol=0)
    one = _run(moe, impl, x[:1, :1], modality[:1, :1])  # a decode step: one token, most experts idle
    torch.testing.assert_close(one, _run(moe, "loop", x[:1, :1], modality[:1, :1]), atol=1e-5, rtol=0)


def test_grouped_equals_loop_bf16() -> None:
    """bf16 tolerance: the grouped path sums routed and shared experts in fp32 before one rounding,
    the loop rounds the routed sum to bf16 and then adds the shared MLP, so they differ by ~1 bf16 ulp."""
    moe = _moe(torch.bfloat16)
    x, modality = _inputs(torch.bfloat16)
    ref = _run(moe, "loop", x, modality).float()
    out = _run(moe, "grouped_mm", x, modality).float()
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)


def test_packing_keeps_names_values_and_storage() -> None:
    moe = _moe()
    before = {k: v.clone() for k, v in moe.state_dict().items()}
    x, modality = _inputs()
    _run(moe, "grouped_mm", x, modality)  # packs
    after = moe.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k
    stack = moe._packed.w_gate
    assert moe.experts[3].gate_proj.weight.untyped_storage().data_ptr() == stack.untyped_storage().data_ptr()
    assert moe.shared_experts.up_proj.weight.shape == (64, 64)  # 2 shared groups of 32
    # In-place updates (init, load without assign) reach the stack; replaced parameters re-pack.
    with torch.no_grad():
        moe.experts[5].down_proj.weight.mul_(3.0)
    torch.testing.assert_close(_run(moe, "grouped_mm", x, modality), _run(moe, "loop", x, modality),
                               atol=1e-5, rtol=0)
    new = {k: torch.randn_like(v) * 0.05 for k, v in before.items()}
    moe.load_state_dict(new, assign=True)
    assert moe._packed is None
    torch.testing.assert_close(_run(moe, "grouped_mm", x, modality), _run(moe, "loop", x, modality),
                               atol=1e-5, rtol=0)
    moe.to(torch.float64)  # every parameter gets a new tensor: the stack is rebuilt
    x64 = x.double()
    assert resolve_impl("auto", x64.device, x64.dtype) == "sorted"  # no grouped GEMM for fp64
    torch.testing.assert_close(_run(moe, "auto", x64, modality), _run(moe, "loop", x64, modality),
                               atol=1e-6, rtol=0)  # both accumulate in fp32


def test_packed_thinker_saves_and_loads(tmp_path) -> None:
    thinker = Thinker.from_preset("tiny", seed=0)
    ids = torch.arange(12)[None]
    pos = torch.arange(12).view(1, 1, -1).expand(3, 1, -1)
    with torch.no_grad():
        out = thinker(thinker.embed_tokens(ids), pos).logits  # packs every layer
    thinker.save_pretrained(tmp_path)  # views into the stacks are written as tensors of their own
    loaded = Thinker.from_pretrained(tmp_path)
    for layer in loaded.model.model.layers:
        layer.mlp.impl = "loop"
    with torch.no_grad():
        torch.testing.assert_close(loaded(loaded.embed_tokens(ids), pos).logits, out, atol=1e-5, rtol=0)


def test_impl_choice_is_checked() -> None:
    assert resolve_impl("auto", torch.device("cpu"), torch.float32) == "grouped_mm"
    assert grouped_mm_supported(torch.device("meta"), torch.bfloat16) is False
    assert resolve_impl("auto", torch.device("meta"), torch.bfloat16) == "sorted"
    with pytest.raises(ValueError, match="does not run on meta"):
        resolve_impl("grouped_mm", torch.device("meta"), torch.bfloat16)
    with pytest.raises(ValueError, match="does not run on cpu with torch.float64"):
        resolve_impl("grouped_mm", torch.device("cpu"), torch.float64)
    with pytest.raises(ValueError, match="unknown MoE implementation"):
        resolve_impl("fast", torch.device("cpu"), torch.float32)


@pytest.mark.slow
def test_compiled_grouped_moe_equals_eager_bf16() -> None:
    """The grouped MoE (routing included) traces as one graph with no host sync, the prerequisite for
    CUDA graphs of the decode step. torch's grouped_mm traces in bf16 only; compiling takes ~2.5 min
    on a 2-core CPU."""
    moe = _moe(torch.bfloat16)
    moe.impl = "grouped_mm"
    x, modality = _inputs(torch.bfloat16)
    torch._dynamo.reset()
    compiled = torch.compile(moe, fullgraph=True)
    with torch.no_grad():
        ref = moe(x, modality).float()
        torch.testing.assert_close(compiled(x, modality).float(), ref, atol=2e-2, rtol=2e-2)
