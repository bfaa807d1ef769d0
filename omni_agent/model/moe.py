"""Grouped mixture-of-experts for BailingMoe: every expert's tokens in one matmul, no Python loop.

The routed experts and the shared experts of one layer are packed into three stacked weight tensors
``[G, F, D]`` (gate, up, and the transposed down projection; G = routed experts + shared-expert
groups of width F). Each expert's ``nn.Linear`` keeps its name and its parameter, which becomes a view
into the stack, so checkpoints, ``state_dict`` and ``init_weights`` see the same tensors as before and
memory is not doubled. A forward step then:

1. sorts the (token, slot) pairs by expert and appends every token once per shared-expert group
   (weight 1), so the shared experts ride in the same grouped GEMMs;
2. runs gate, up and down projections as three ``torch.nn.functional.grouped_mm`` calls over the
   groups (``grouped_mm``), or one matmul per non-empty group (``sorted``) where the device/dtype has
   no grouped GEMM;
3. scatters the weighted rows back with one ``index_add_``.

``impl="loop"`` keeps the original reference (one module call per expert) for tests and side-by-side
benchmarks. The grouped path never syncs with the host, so it can be captured in a CUDA graph.

Shape legend: N tokens, A active experts per token, E routed experts, S shared groups, G = E + S,
R = N*A + N*S rows, D hidden size, F expert width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MOE_IMPLS = ("auto", "grouped_mm", "sorted", "loop")


@dataclass
class PackedExperts:
    """One layer's experts stacked for grouped GEMMs (the experts' parameters are views into these)."""

    w_gate: torch.Tensor
    """``[G, F, D]`` gate projections."""
    w_up: torch.Tensor
    """``[G, F, D]`` up projections."""
    w_down_t: torch.Tensor
    """``[G, F, D]`` down projections, transposed."""
    num_routed: int
    num_shared: int


def _repoint(linear: nn.Linear, view: torch.Tensor) -> None:
    linear.weight = nn.Parameter(view, requires_grad=linear.weight.requires_grad)


@torch.no_grad()
def pack_experts(experts: nn.ModuleList, shared: nn.Module | None, width: int) -> PackedExperts:
    """Stack the experts' weights (shared MLP split into groups of ``width``) and re-point every
    expert parameter at its slice of the stack.

    Raises:
        ValueError: the shared MLP's width is not a multiple of the expert width, or biases are used.
    """
    gates = [e.gate_proj.weight for e in experts]
    ups = [e.up_proj.weight for e in experts]
    downs_t = [e.down_proj.weight.t() for e in experts]
    mods = list(experts) + ([shared] if shared is not None else [])
    if any(lin.bias is not None for m in mods for lin in (m.gate_proj, m.up_proj, m.down_proj)):
        raise ValueError("grouped experts do not support biased projections")
    n_shared = 0
    if shared is not None:
        total = shared.gate_proj.weight.shape[0]
        if total % width:
            raise ValueError(f"shared expert width {total} is not a multiple of the expert width {width}")
        n_shared = total // width
        dim = shared.gate_proj.weight.shape[1]
        gates += list(shared.gate_proj.weight.view(n_shared, width, dim))
        ups += list(shared.up_proj.weight.view(n_shared, width, dim))
        downs_t += list(shared.down_proj.weight.t().reshape(n_shared, width, dim))
    packed = PackedExperts(torch.stack(gates), torch.stack(ups), torch.stack(downs_t), len(experts), n_shared)
    for i, e in enumerate(experts):
        _repoint(e.gate_proj, packed.w_gate[i])
        _repoint(e.up_proj, packed.w_up[i])
        _repoint(e.down_proj, packed.w_down_t[i].t())
    if shared is not None:
        E = len(experts)
        _repoint(shared.gate_proj, packed.w_gate[E:].reshape(n_shared * width, -1))
        _repoint(shared.up_proj, packed.w_up[E:].reshape(n_shared * width, -1))
        _repoint(shared.down_proj, packed.w_down_t[E:].reshape(n_shared * width, -1).t())
    return packed


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``F.grouped_mm`` runs here: CPU in fp32/bf16/fp16, CUDA bf16 on Hopper (sm90) or newer."""
    if not hasattr(F, "grouped_mm"):
        return False
    if device.type == "cpu":
        return dtype in (torch.float32, torch.bfloat16, torch.float16)
    if device.type == "cuda":
        return dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (9, 0)
    return False


def resolve_impl(impl: str, device: torch.device, dtype: torch.dtype) -> str:
    """``auto`` -> ``grouped_mm`` where supported, else ``sorted``; an explicit choice is checked.

    Raises:
        ValueError: an unknown implementation, or ``grouped_mm`` where the device/dtype lacks it.
    """
    if impl not in MOE_IMPLS:
        raise ValueError(f"unknown MoE implementation {impl!r} (choose from {', '.join(MOE_IMPLS)})")
    supported = grouped_mm_supported(device, dtype)
    if impl == "auto":
        return "grouped_mm" if supported else "sorted"
    if impl == "grouped_mm" and not supported:
        raise ValueError(f"torch grouped_mm does not run on {device} with {dtype}; use impl 'sorted'")
    return impl


def grouped_experts(flat: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor, packed: PackedExperts,
                    use_grouped_mm: bool) -> torch.Tensor:
    """Routed plus shared experts for ``flat`` ``[N, D]`` with router ``weights``/``idx`` ``[N, A]`` -> ``[N, D]``.

    Accumulates in float32 and returns ``flat``'s dtype.
    """
    N, D = flat.shape
    A, E, S = idx.shape[1], packed.num_routed, packed.num_shared
    flat_idx = idx.reshape(-1)  # [N*A]
    order = flat_idx.argsort(stable=True)
    token_of = order // A
    w_rows = weights.reshape(-1)[order].float()
    counts = torch.zeros(E, device=flat.device, dtype=torch.long).scatter_add_(0, flat_idx, torch.ones_like(flat_idx))
    if S:
        shared_tokens = torch.arange(N, device=flat.device).repeat(S)
        token_of = torch.cat([token_of, shared_tokens])
        w_rows = torch.cat([w_rows, torch.ones(N * S, device=flat.device)])
        counts = torch.cat([counts, torch.full((S,), N, device=flat.device, dtype=counts.dtype)])
    rows = flat[token_of]  # [R, D]
    if use_grouped_mm:
        offs = counts.cumsum(0).to(torch.int32)
        gate = F.grouped_mm(rows, packed.w_gate.transpose(1, 2), offs=offs)  # [R, F]
        up = F.grouped_mm(rows, packed.w_up.transpose(1, 2), offs=offs)
        out = F.grouped_mm(F.silu(gate) * up, packed.w_down_t, offs=offs)  # [R, D]
    else:
        out = torch.empty_like(rows)
        start = 0
        for g, n in enumerate(counts.tolist()):
            if n:
                x = rows[start:start + n]
                h = F.silu(x @ packed.w_gate[g].t()) * (x @ packed.w_up[g].t())  # [n, F]
                out[start:start + n] = h @ packed.w_down_t[g]
                start += n
    y = torch.zeros(N, D, device=flat.device, dtype=torch.float32)
    y.index_add_(0, token_of, out.float() * w_rows[:, None])
    return y.to(flat.dtype)
