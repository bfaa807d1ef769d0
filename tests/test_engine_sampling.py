"""Sampler filters and the incremental detokenizer, checked against their plain definitions."""

from __future__ import annotations

import random

import torch

from omni_agent.engine.output_processor import IncrementalDetokenizer
from omni_agent.engine.sampler import apply_repetition_penalty, filter_top_k_top_p
from omni_agent.model.processor import OmniProcessor


def test_top_k_keeps_exactly_k():
    logits = torch.randn(100, generator=torch.Generator().manual_seed(0))
    kept = torch.isfinite(filter_top_k_top_p(logits, 7, 1.0))
    assert kept.sum() == 7 and set(kept.nonzero().flatten().tolist()) == set(logits.topk(7).indices.tolist())


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.05, 0.3, 0.1, 0.05]))
    kept = torch.isfinite(filter_top_k_top_p(logits, 0, 0.75)).nonzero().flatten().tolist()
    assert kept == [0, 2]  # 0.5 + 0.3 passes 0.75
    assert torch.isfinite(filter_top_k_top_p(logits, 0, 0.01)).sum() == 1  # the top token always stays


def test_repetition_penalty_pushes_seen_tokens_down():
    logits = torch.tensor([2.0, -2.0, 1.0])
    apply_repetition_penalty(logits, torch.tensor([0, 1]), 2.0)
    assert logits.tolist() == [1.0, -4.0, 1.0]


def test_incremental_detokenizer_matches_full_decode():
    tok = OmniProcessor.for_preset("tiny").tokenizer
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(tok.get_vocab_size()) for _ in range(40)]
        d = IncrementalDetokenizer(tok, [], set())
        text = ""
        for t in ids:
            d.push(t)
            text += d.delta(final=False)
        text += d.delta(final=True)
        assert text == tok.decode(ids, skip_special_tokens=True)


def test_stop_string_is_cut_and_never_leaks():
    tok = OmniProcessor.for_preset("tiny").tokenizer
    ids = tok.encode("hello world, stop here please", add_special_tokens=False).ids
    d = IncrementalDetokenizer(tok, ["stop here"], set())
    streamed, stopped = "", False
    for t in ids:
        stopped = d.push(t)
        streamed += d.delta(final=stopped)
        if stopped:
            break
    assert stopped and streamed == "hello world, "


def test_incremental_seen_set_equals_recomputing_it_each_step():
    from types import SimpleNamespace

    from omni_agent.engine.sampler import _seen

    prompt = SimpleNamespace(input_ids=torch.tensor([3, 5, 5, 9]))
    state = SimpleNamespace(request=SimpleNamespace(prompt=prompt), output_ids=[], seen_tokens=None)
    row = torch.zeros(16)
    for tok in [7, 3, 12, 7, 0]:
        got = _seen(state, row).clone()
        want = torch.zeros(16, dtype=torch.bool)
        want[torch.cat([prompt.input_ids, torch.tensor(state.output_ids, dtype=torch.long)])] = True
        assert torch.equal(got, want)
        state.output_ids.append(tok)  # what the engine does after sampling
