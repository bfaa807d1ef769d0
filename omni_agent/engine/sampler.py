"""Token sampling for a batch of requests with per-request parameters.

Rows are independent: each request's repetition penalty, temperature, top-k/top-p and grammar mask
apply to its row only, and a seeded request draws from its own ``torch.Generator`` so its tokens
do not depend on what else happens to be batched with it. A row that cannot be sampled (non-finite
logits, a failing grammar) yields an ``EngineError`` in its slot instead of a token: the engine fails
that request alone and the rest of the batch carries on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from omni_agent.engine.request import EngineError, RequestState, TokenLogprob


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> None:
    """CTRL-style penalty in place on one row: positive logits divided, negative multiplied.

    The penalty is validated at admission (``SamplingParams.validate``: finite, within
    ``[MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY]``), so it is a normal float32 number here;
    multiplying by ``1 / penalty`` in float32 keeps a huge logit finite where ``vals / p`` of a
    float32-underflowed ``p`` would be ``inf``. A result that is still not finite raises.
    """
    vals = logits[seen]
    out = torch.where(vals > 0, vals * (1.0 / penalty), vals * penalty)
    if not bool(torch.isfinite(out[vals.isfinite()]).all()):
        raise EngineError(f"repetition_penalty {penalty} overflows the logits")
    logits[seen] = out


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) everything outside the top-k and the top-p nucleus of one row ``[V]``."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass *before* it already reaches top_p (the top token always stays)
        drop = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    return logits


def sample(logits: torch.Tensor, states: Sequence[RequestState]) -> list[int | EngineError]:
    """Pick one token per row.

    Args:
        logits: ``[B, V]`` float logits (grammar masks already applied; ``-inf`` marks a banned token).
        states: the requests, row by row.

    Returns:
        One token id per row, or the ``EngineError`` that row failed with (NaN or ``+inf`` logits,
        a penalty that overflows, a sampling error): the caller fails that request only.
    """
    logits = logits.float()
    top = logits.amax(-1)  # [B]: NaN and +inf both show up in a row's max (one reduction, no [B, V] masks)
    broken = (top.isnan() | top.isposinf()).tolist()
    if not any(broken) and all(s.request.sampling.greedy and s.request.sampling.repetition_penalty == 1.0
                               for s in states):
        return logits.argmax(-1).tolist()  # the common batched greedy case, no per-row work
    out: list[int | EngineError] = []
    for row, s, bad in zip(logits, states, broken, strict=True):
        if bad:
            out.append(EngineError("the model produced non-finite logits for this request"))
            continue
        try:
            out.append(_sample_row(row, s))
        except Exception as e:  # noqa: BLE001 - one row's failure is reported to that request only
            out.append(e if isinstance(e, EngineError) else EngineError(f"sampling failed: {e}"))
    return out


def _sample_row(row: torch.Tensor, s: RequestState) -> int:
    sp = s.request.sampling
    if sp.repetition_penalty != 1.0:
        row = row.clone()
        apply_repetition_penalty(row, _seen(s, row), sp.repetition_penalty)
    if sp.greedy:
        return int(row.argmax())
    row = filter_top_k_top_p(row / sp.temperature, sp.top_k, sp.top_p)
    if not torch.isfinite(row).any():  # nothing allowed (cannot happen with a sane grammar)
        return int(row.argmax())
    probs = row.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=s.generator))


def _seen(state: RequestState, row: torch.Tensor) -> torch.Tensor:
    """``[V]`` bool of tokens in the prompt or output: built once, then one new token per step."""
    seen = state.seen_tokens
    if seen is None:
        seen = torch.zeros(row.shape[-1], dtype=torch.bool, device=row.device)
        seen[state.request.prompt.input_ids.to(row.device)] = True
        seen[torch.tensor(state.output_ids, dtype=torch.long, device=row.device)] = True
        state.seen_tokens = seen
    else:
        seen[state.output_ids[-1]] = True  # sampling appends one token per step
    return seen


def token_logprobs(logits: torch.Tensor, states: Sequence[RequestState], tokens: Sequence[int | Exception]
                   ) -> list[TokenLogprob | None]:
    """Per row: the sampled token's log-probability and the top alternatives, for rows that asked.

    Args:
        logits: ``[B, V]`` the logits ``sample`` was given (grammar masks applied).
        states: the requests, row by row.
        tokens: the sampled token of each row (an exception for a row whose sampling failed: no entry).
    """
    if all(s.request.sampling.logprobs is None for s in states):
        return [None] * len(states)  # the usual step: nobody asked
    out: list[TokenLogprob | None] = []
    for row, s, tok in zip(logits, states, tokens, strict=True):
        k = s.request.sampling.logprobs
        if k is None or isinstance(tok, Exception):
            out.append(None)
            continue
        lp = row.float().log_softmax(-1)  # [V]
        top = torch.topk(lp, k) if k > 0 else None
        alts = list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top is not None else []
        out.append(TokenLogprob(tok, float(lp[tok]), alts))
    return out
