"""``omni-agent demo`` end to end: every stage on the real code path (``--quick``: shortest replies)."""

from __future__ import annotations

import os

from omni_agent import preflight
from omni_agent.cli import main
from omni_agent.demo import STAGES


def test_demo_runs_every_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "_told_random", False)
    def ours() -> dict[str, str]:  # torch may set its own cache variables; ours must not change
        return {k: v for k, v in os.environ.items() if k.startswith("OMNI_AGENT_")}

    env_before = ours()
    out = tmp_path / "demo-out"
    rc = main(["demo", "--quick", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.out[-3000:] + captured.err[-3000:]
    # No stage leaks a setting into the next one (the old MAX_STEPS=2 stopped the Android task at step 2).
    assert ours() == env_before
    summary = captured.out[captured.out.index("== demo summary"):]
    assert f"{len(STAGES)} of {len(STAGES)} stages passed" in summary
    for name, _ in STAGES:
        assert f"ok     {name}" in summary
    assert f"outputs in {out.resolve()}/" in summary
    assert "weights: RANDOM ('tiny' preset" in summary
    assert captured.err.count("weights are RANDOM") == 1  # said once, although the demo runs other commands
    for name in ("voice-question.wav", "voice-reply.wav", "bicycle.png", "sessions.sqlite"):
        assert (out / name).is_file(), name
    assert list((out / "android").rglob("*.jsonl")) or list((out / "android").rglob("*.png"))
