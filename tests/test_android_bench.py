"""``omni-agent bench android --quick`` smoke: the contract keys and a perfect oracle."""

from __future__ import annotations

import json

import pytest

from omni_agent.bench import BenchContext, registry
from omni_agent.cli import main
from omni_agent.settings import load_settings

pytestmark = pytest.mark.timeout(180)


def test_bench_android_quick_keys():
    bench = registry()["android"]
    result = bench.fn(BenchContext(settings=load_settings(flags={}), quick=True))
    assert {"tasks", "oracle_success_rate", "step_ms_p50_adb", "step_ms_p50_ws"} <= set(result)
    assert result["oracle_success_rate"] == 1.0 and result["tasks"] >= 3
    assert result["step_ms_p50_adb"] > 0 and result["step_ms_p50_ws"] > 0
    json.dumps(result)


def test_android_tasks_command_lists_the_suite(capsys):
    assert main(["android", "tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 12 and any("send_hello_alice" in line and "needs approval" in line for line in lines)
