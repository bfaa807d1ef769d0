"""``omni-agent run``: GUI tasks on the simulator and the image path, through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from omni_agent.cli import main


def test_run_sim_task_with_oracle_approved(tmp_path, capsys):
    rc = main(["run", "--task", "send_hello_alice", "--oracle", "--approve-all", "--db", str(tmp_path / "s.sqlite"),
               "--out", str(tmp_path / "out"), "--trajectory", str(tmp_path / "traj")])
    out = capsys.readouterr().out
    assert rc == 0 and "task send_hello_alice: success" in out
    steps = [json.loads(line) for line in (tmp_path / "traj" / "steps.jsonl").read_text().splitlines()]
    assert [s["action"]["action_type"] for s in steps][-1] == "status"


def test_run_sim_task_denied_without_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    rc = main(["run", "--task", "send_hello_alice", "--oracle", "--db", str(tmp_path / "s.sqlite"),
               "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 1 and "not solved" in captured.out and "denied" in captured.err


def test_run_help_keeps_common_flags_intact(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "--device" in capsys.readouterr().out  # run's own --device does not steal bench's


@pytest.mark.slow
def test_run_draw_writes_png(tmp_path, capsys):
    out = tmp_path / "bicycle.png"
    rc = main(["run", "draw a red bicycle", "--out", str(out), "--image-steps", "2", "--max-tokens", "4",
               "--db", str(tmp_path / "s.sqlite")])
    assert rc == 0 and out.read_bytes()[:4] == b"\x89PNG"
