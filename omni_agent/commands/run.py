"""``omni-agent run "GOAL"``: one agent run from the shell.

- ``omni-agent run "draw a red bicycle" --out bicycle.png``: a chat turn through the agent graph with
  the image tools; generated images are written to ``--out`` (a ``.png`` file or a folder).
- ``omni-agent run "Turn on Wi-Fi" --device SERIAL``: a GUI task on an adb device
  (``--sim`` starts the simulated phone on a private adb server instead; ``--task NAME`` takes the goal
  and success check from the simulator's task suite; ``--oracle`` drives the graph with that task's
  scripted policy instead of the thinker, which shows the loop working without trained weights).

Risky actions (pay, delete, send, install, log in) stop for confirmation: an interactive y/N prompt,
``--approve-all`` to skip it, and "no" when stdin is not a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from omni_agent.cli import add_setting_flag
from omni_agent.settings import Settings

DRAW = re.compile(r"^\s*(draw|paint|sketch|generate|create|make|render)\b", re.IGNORECASE)  # "draw ..." -> image tool


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # Not ``parents=[common]``: here ``--device`` is the phone's serial (as in ``adb -s``), so the
    # common flags are re-declared with ``--torch-device`` for the model's device.
    p = subparsers.add_parser("run", help="run the agent once: a chat/image request or a GUI task on a phone",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c = p.add_argument_group("common options")
    c.add_argument("--config", metavar="FILE", help="TOML settings file (also OMNI_AGENT_CONFIG)")
    add_setting_flag(c, "--log-level", "log_level", choices=["debug", "info", "warning", "error"],
                     help="logging level (default info)")
    add_setting_flag(c, "--preset", "model.preset", choices=["tiny", "ming-lite-omni-1.5"],
                     help="model preset when no checkpoint is given (default tiny)")
    add_setting_flag(c, "--model-path", "model.path", metavar="DIR", help="checkpoint folder in Ming's layout")
    add_setting_flag(c, "--dtype", "model.dtype", choices=["float32", "bfloat16", "float16"],
                     help="weight dtype (default float32)")
    add_setting_flag(c, "--torch-device", "model.device", metavar="DEVICE", help="torch device for the model (default cpu)")
    p.add_argument("goal", nargs="?", default="", help="what to do (optional with --task)")
    g = p.add_argument_group("GUI tasks")
    g.add_argument("--device", "-s", dest="serial", default=None, metavar="SERIAL",
                   help="adb serial of the phone to operate (GUI mode)")
    g.add_argument("--sim", action="store_true", help="start the simulated phone and operate it (GUI mode)")
    g.add_argument("--adb-port", type=int, default=None, help="adb server port for --device (default 5037)")
    g.add_argument("--task", default=None, help="simulator task-suite name (goal + success check); implies --sim")
    g.add_argument("--oracle", action="store_true", help="with --task: drive the graph with the task's scripted policy")
    g.add_argument("--trajectory", default=None, metavar="DIR", help="record the trajectory here (default OUT/trajectory)")
    p.add_argument("--approve-all", action="store_true", help="approve every risky action without asking")
    p.add_argument("--out", default="agent-out", help="where artifacts go: a .png file or a folder (default agent-out)")
    p.add_argument("--tool", default=None, help="force the first step: a tool name, 'auto', 'none' or 'required'")
    p.add_argument("--image-steps", type=int, default=20, help="diffusion steps per image (default 20)")
    p.add_argument("--max-tokens", type=int, default=64, help="longest text answer (default 64)")
    p.add_argument("--session", default=None, help="session id (resume an earlier run's conversation)")
    add_setting_flag(p, "--max-steps", "agent.max_steps", type=int, metavar="N", help="most tool rounds (default 8)")
    add_setting_flag(p, "--db", "agent.checkpoint_db", metavar="FILE", help="session database (SQLite)")
    p.set_defaults(func=run)


def _ask(event: dict[str, Any], approve_all: bool) -> bool:
    desc = f"{event['tool']} {json.dumps(event['arguments'], ensure_ascii=False)}: {event['reason']}"
    if approve_all:
        print(f"[approved] {desc}", file=sys.stderr)
        return True
    if not sys.stdin.isatty():
        print(f"[denied, no terminal to ask] {desc}", file=sys.stderr)
        return False
    answer = input(f"Allow {desc}? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _print_event(ev: dict[str, Any]) -> None:
    kind = ev["type"]
    if kind == "text":
        print(ev["delta"], end="", flush=True)
    elif kind == "call_done":
        print(f"\n-> {ev['name']} {json.dumps(ev['arguments'], ensure_ascii=False)}", file=sys.stderr)
    elif kind == "progress":
        print(f"   {ev.get('message') or ev}", file=sys.stderr)
    elif kind == "tool_result":
        print(f"<- {ev['content'][:200]}", file=sys.stderr)
    elif kind == "observation":
        obs = ev["observation"]
        print(f"[step {obs['step']}] {obs['package']}: {obs['n_elements']} elements", file=sys.stderr)


async def _drive(runner: Any, session: str, first: Any, ctx: Any, approve_all: bool) -> dict[str, Any]:
    stream = first
    while True:
        finished: dict[str, Any] = {}
        confirmation = None
        async for ev in stream:
            _print_event(ev)
            if ev["type"] == "confirmation":
                confirmation = ev
            elif ev["type"] == "finished":
                finished = ev
        if finished.get("status") != "waiting_confirmation" or confirmation is None:
            print()
            return finished
        stream = runner.resolve(session, _ask(confirmation, approve_all), ctx)


def _write_artifacts(store: Any, artifacts: list[dict[str, Any]], out: Path) -> list[Path]:
    written = []
    for i, art in enumerate(artifacts):
        data, mime, _meta = store.get(art["id"])
        if out.suffix.lower() == ".png" and i == 0:
            path = out
        else:
            folder = out if out.suffix.lower() != ".png" else out.parent
            path = folder / f"{art['id']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from langchain_core.messages import HumanMessage

    from omni_agent.agent.artifacts import ArtifactStore
    from omni_agent.agent.graph import RunContext, build_graph
    from omni_agent.agent.persistence import close_checkpointer, open_checkpointer
    from omni_agent.agent.runner import AgentRunner
    from omni_agent.preflight import building, check_task, model_label, random_weights_notice

    gui = bool(args.serial or args.sim or args.task)
    goal = args.goal
    task = None
    if args.task:
        task = check_task(args.task)
        goal = goal or task.goal
    if not goal:
        print("omni-agent: error: give a goal (or --task NAME)", file=sys.stderr)
        return 2
    out = Path(args.out)
    store = ArtifactStore()
    session = args.session or f"run_{uuid.uuid4().hex[:12]}"
    saver = await open_checkpointer(settings.agent.checkpoint_db)
    engine = None
    stack: list[Any] = []
    try:
        if not (gui and args.oracle):
            from omni_agent.agent.engine_model import EngineChatModel
            from omni_agent.engine import AsyncEngine

            random_weights_notice(settings, "run")
            with building(f"the thinker ({model_label(settings)})"):
                # building the thinker reads weights: keep the event loop free
                engine = await asyncio.to_thread(AsyncEngine.from_settings, settings)
            await engine.start()
            model: Any = EngineChatModel(engine, artifacts=store, max_tokens=args.max_tokens)
        ctx = RunContext(approve_all=args.approve_all, tool_choice=args.tool or "auto")
        if gui:
            status = await _run_gui(args, settings, saver, store, session, goal, task, ctx,
                                    None if args.oracle else model, stack)
            return 0 if status == "complete" else 1
        from omni_agent.agent.image_tools import ImageTools

        max_steps = settings.agent.max_steps
        if args.tool is None and DRAW.match(goal):
            # an explicit drawing request: draw once, then answer (unless --max-steps says otherwise)
            ctx.tool_choice = "generate_image"
            if not hasattr(args, "setting:agent.max_steps"):
                max_steps = 1
        tools = ImageTools.lazy(engine, store, preset=settings.model.preset, path=settings.model.path,
                                steps=args.image_steps).tools()
        graph = build_graph(model, tools, saver, max_steps=max_steps,
                            tool_timeout_s=settings.agent.tool_timeout_s, artifacts=store)
        runner = AgentRunner(graph, max_steps=max_steps)
        await _drive(runner, session, runner.turn(session, [HumanMessage(goal)], ctx), ctx, args.approve_all)
        state = await runner.state(session)
        written = _write_artifacts(store, state.get("artifacts", []), out)
        for path in written:
            print(f"wrote {path}")
        print(f"session {session} (resume with --session {session})", file=sys.stderr)
        return 0
    finally:
        for close in reversed(stack):
            close()
        if engine is not None:
            await engine.shutdown()
        await close_checkpointer(saver)


async def _run_gui(args, settings, saver, store, session, goal, task, ctx, model, stack) -> str:
    from omni_agent.agent.graph import build_graph
    from omni_agent.agent.gui import GuiEnv
    from omni_agent.agent.models import ScriptedChatModel, call
    from omni_agent.agent.runner import AgentRunner
    from tools.android.adb import AdbDevice
    from tools.android.device import SecretStore
    from tools.android.trajectory import Recorder

    sim = None
    secrets = SecretStore()
    if args.sim or args.task:
        from tools.android.sim import SimulatedDevice
        from tools.android.tasks import SECRETS
        from tools.android.testing import adb_server

        sim = SimulatedDevice().start()
        stack.append(sim.stop)
        server = adb_server()
        port = server.__enter__()
        stack.append(lambda: server.__exit__(None, None, None))
        device = AdbDevice(sim.serial, port=port, secrets=SecretStore(dict(SECRETS)))
        print(f"simulated phone at {sim.serial} (adb server port {port})", file=sys.stderr)
    else:
        device = AdbDevice(args.serial, port=args.adb_port, secrets=secrets)
    folder = Path(args.trajectory) if args.trajectory else Path(args.out) / "trajectory" / session
    recorder = Recorder(folder, marks=True)
    stack.append(recorder.close)
    env = GuiEnv(device, artifacts=store, recorder=recorder, goal=goal)
    if model is None:  # --oracle: the task's scripted policy reads each screen's elements
        steps = iter(task.oracle)

        def policy(request: Any) -> Any:
            step = next(steps)
            return call("android_action", **(step(env.last) if callable(step) else step))

        model = ScriptedChatModel([policy], repeat_last=True)
    graph = build_graph(model, [env.tool()], saver, gui=env, max_steps=settings.agent.max_steps,
                        tool_timeout_s=settings.agent.tool_timeout_s, artifacts=store)
    # a GUI task checkpoints after every step: a crash mid-task keeps the steps already taken
    runner = AgentRunner(graph, max_steps=settings.agent.max_steps, durability="async")
    finished = await _drive(runner, session, runner.gui_task(session, goal, ctx), ctx, args.approve_all)
    status = finished.get("status")
    print(f"status: {status} after {finished.get('steps')} step(s); trajectory in {folder}")
    if task is not None and sim is not None:
        from tools.android.tasks import Episode

        state = await runner.state(session)
        answers = [t["result"].removeprefix("answered: ") for t in state.get("trajectory", [])
                   if t["result"].startswith("answered: ")]
        ep = Episode(actions=[t["action"] for t in state.get("trajectory", [])], status=status,
                     answer=answers[-1] if answers else None)
        ok = task.check(sim.state, ep)
        print(f"task {task.name}: {'success' if ok else 'not solved'}")
        return "complete" if ok else "failed"
    return status or "error"


def run(args: argparse.Namespace, settings: Settings) -> int:
    from omni_agent.preflight import check_model, check_output_file, check_phone, check_positive, check_task

    # What needs no model is checked before anything is built or opened.
    if args.task:
        check_task(args.task)
    if args.serial and not (args.sim or args.task):
        check_phone(args.serial, args.adb_port)  # an unreachable phone costs one line, not a model build
    if not (args.oracle and (args.task or args.sim)):
        check_model(settings, "thinker", device_flag="--torch-device")
    if Path(args.out).suffix.lower() == ".png":
        check_output_file(args.out, "--out")
    check_positive(args.image_steps, "--image-steps")
    check_positive(args.max_tokens, "--max-tokens")
    return asyncio.run(_run(args, settings))
