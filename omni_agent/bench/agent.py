"""``omni-agent bench agent``: what the agent graph itself costs, resume across restarts, GUI step time.

Keys (a contract, see docs/agent.md):

- ``graph_overhead_ms_p50``: wall time of one text tool turn (think -> tools -> think, the session
  checkpointed to SQLite) minus the time spent inside the model and the tool (a scripted
  model and a no-op tool make that compute ~0), over sessions of 10 turns; the best of 3 rounds
  (``graph_overhead_ms_p50_all_rounds``: the median over rounds). Target: <= 5 ms.
- ``resume_ok``: a run paused on a confirmation, the database closed ("restart"), a new graph over
  the same file: the confirmation is still pending, approving it runs the tool, the conversation is whole.
- ``gui_step_ms_p50``: one observe -> think -> act step on the simulated phone (real adb server),
  the tiny thinker deciding with constrained decoding.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from omni_agent.bench import BenchContext, benchmark

SESSION_TURNS = 10  # overhead is measured over sessions of this many turns (history grows within one)
LONG_TURNS = 100  # and once more deep into a long session (every step re-serialises the history)


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class _Timed:
    """Wraps a chat model and records the time spent inside it."""

    def __init__(self, model: Any):
        self.model = model
        self.seconds = 0.0

    async def agenerate(self, request: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self.model.agenerate(request)
        finally:
            self.seconds += time.perf_counter() - t0


async def _overhead(db: Path, turns: int) -> dict[str, float]:
    from langchain_core.messages import HumanMessage

    from omni_agent.agent.graph import build_graph
    from omni_agent.agent.models import ScriptedChatModel, call
    from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
    from omni_agent.agent.runner import AgentRunner
    from omni_agent.agent.tools import Tool

    tool_s = [0.0]

    async def noop(args: Any, ctx: Any) -> str:
        t0 = time.perf_counter()
        out = "ok"
        tool_s[0] += time.perf_counter() - t0
        return out

    saver = await open_checkpointer(db)
    try:
        results: dict[str, list[float]] = {"tool": [], "plain": [], "long": []}
        for kind, script in (("tool", [call("noop"), "done"]), ("plain", ["hello"])):
            model = _Timed(ScriptedChatModel(script))
            graph = build_graph(model, [Tool("noop", "Does nothing.", None, noop)], saver)
            runner = AgentRunner(graph)
            sessions = max(1, turns // SESSION_TURNS)
            for n in range(sessions * SESSION_TURNS + 3):  # 3 warm-up turns (schemas, SQL statements)
                session = f"bench_{kind}_{max(-1, (n - 3) // SESSION_TURNS)}"
                model.model._i = 0
                model.seconds, tool_s[0] = 0.0, 0.0
                t0 = time.perf_counter()
                async for _ev in runner.turn(session, [HumanMessage(f"turn {n}")]):
                    pass
                if n >= 3:
                    results[kind].append((time.perf_counter() - t0 - model.seconds - tool_s[0]) * 1000)
            if kind == "tool":  # the same turn once the session holds LONG_TURNS earlier turns
                for n in range(LONG_TURNS + 5):
                    model.model._i = 0
                    model.seconds, tool_s[0] = 0.0, 0.0
                    t0 = time.perf_counter()
                    async for _ev in runner.turn("bench_long", [HumanMessage(f"turn {n}")]):
                        pass
                    if n >= LONG_TURNS:
                        results["long"].append((time.perf_counter() - t0 - model.seconds - tool_s[0]) * 1000)
        return {"graph_overhead_ms_p50": statistics.median(results["tool"]),
                "graph_overhead_ms_p90": _p(results["tool"], 0.9),
                "plain_turn_overhead_ms_p50": statistics.median(results["plain"]),
                f"overhead_ms_p50_after_{LONG_TURNS}_turns": statistics.median(results["long"])}
    finally:
        await close_checkpointer(saver)


async def _resume(db: Path) -> bool:
    from langchain_core.messages import HumanMessage

    from omni_agent.agent.graph import build_graph
    from omni_agent.agent.models import ScriptedChatModel, call
    from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
    from omni_agent.agent.runner import AgentRunner
    from omni_agent.agent.tools import Tool

    ran: list[str] = []
    tool = Tool("pay", "Pay.", None, lambda args, ctx: ran.append("pay") or "paid", approval=True)
    saver = await open_checkpointer(db)
    runner = AgentRunner(build_graph(ScriptedChatModel(["hi"]), [tool], saver))
    async for _ev in runner.turn("resume", [HumanMessage("hello")]):
        pass
    runner = AgentRunner(build_graph(ScriptedChatModel([call("pay")]), [tool], saver))
    async for _ev in runner.turn("resume", [HumanMessage("pay the bill")]):
        pass
    await close_checkpointer(saver)
    saver = await open_checkpointer(db)  # the restart
    try:
        runner = AgentRunner(build_graph(ScriptedChatModel(["paid"]), [tool], saver))
        pending = await runner.pending_confirmations("resume")
        last: dict[str, Any] = {}
        async for ev in runner.resolve("resume", True):
            last = ev
        msgs = await runner.messages("resume")
        return (len(pending) == 1 and ran == ["pay"] and last.get("text") == "paid"
                and [m.type for m in msgs] == ["human", "ai", "human", "ai", "tool", "ai"])
    finally:
        await close_checkpointer(saver)


async def _gui(settings: Any, db: Path, steps: int) -> dict[str, float]:
    from omni_agent.agent.engine_model import EngineChatModel
    from omni_agent.agent.graph import RunContext, build_graph
    from omni_agent.agent.gui import GuiEnv
    from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
    from omni_agent.agent.runner import AgentRunner
    from omni_agent.engine import AsyncEngine
    from tools.android.adb import AdbDevice
    from tools.android.sim import SimulatedDevice
    from tools.android.testing import adb_server

    engine = await asyncio.to_thread(AsyncEngine.from_settings, settings)  # builds the thinker: off the loop
    await engine.start()
    saver = await open_checkpointer(db)
    sim = SimulatedDevice().start()
    try:
        with adb_server() as port:
            env = GuiEnv(AdbDevice(sim.serial, port=port), model_max_side=224)
            model = _Timed(EngineChatModel(engine, max_arg_tokens=48, seed=0))
            graph = build_graph(model, [env.tool()], saver, gui=env, max_steps=steps + 1)
            runner = AgentRunner(graph, max_steps=steps + 1)
            marks: list[float] = []
            # the task never gets "complete" from a random model; run one step longer than measured
            async for ev in runner.gui_task("gui", "Turn on Wi-Fi", RunContext(approve_all=True)):
                if ev["type"] == "observation":
                    marks.append(time.perf_counter())
        step_ms = [(b - a) * 1000 for a, b in zip(marks, marks[1:], strict=False)]
        return {"gui_step_ms_p50": statistics.median(step_ms) if step_ms else float("nan"),
                "gui_observe_ms_p50": statistics.median(env.observe_ms),
                "gui_act_ms_p50": statistics.median(env.act_ms) if env.act_ms else float("nan"),
                "gui_steps": len(step_ms)}
    finally:
        sim.stop()
        await close_checkpointer(saver)
        await engine.shutdown()


async def _overhead_rounds(db_dir: Path, turns: int, rounds: int) -> dict[str, float]:
    """The overhead measured in ``rounds`` rounds; the best round is reported (the code's own cost: on a
    shared machine the other rounds include other processes' time), the median of all rounds as well."""
    runs = [await _overhead(db_dir / f"overhead{r}.sqlite", turns) for r in range(rounds)]
    best = min(runs, key=lambda r: r["graph_overhead_ms_p50"])
    best["graph_overhead_ms_p50_all_rounds"] = statistics.median(r["graph_overhead_ms_p50"] for r in runs)
    return best


@benchmark("agent", "agent graph overhead per turn, resume after restart, GUI step time (sim + tiny thinker)")
def bench_agent(ctx: BenchContext) -> dict[str, Any]:
    turns = 10 if ctx.quick else 200
    gui_steps = 2 if ctx.quick else 8

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            out: dict[str, Any] = {}
            out.update(await _overhead_rounds(Path(tmp), turns, 1 if ctx.quick else 3))
            out["resume_ok"] = await _resume(Path(tmp) / "resume.sqlite")
            out.update(await _gui(ctx.settings, Path(tmp) / "gui.sqlite", gui_steps))
            out["turns"] = turns
            return out

    return asyncio.run(main())
