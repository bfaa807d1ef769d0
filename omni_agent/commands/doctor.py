"""``omni-agent doctor``: check that the installed native parts are the locked ones and that they load."""

from __future__ import annotations

import argparse

from omni_agent.settings import Settings


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("doctor", help="check the environment (torch/torchaudio pair, av, xgrammar, silero)",
                              description="Run the native-parts checks `make setup` ends with; one line per "
                                          "failure and exit code 1 when any fails.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from omni_agent.doctor import main

    return main()
