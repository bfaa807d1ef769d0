"""The ``omni-agent`` command line.

Subcommands live in ``omni_agent/commands/``, one module each, so that each capability adds its own
without touching this file. A command module defines ``register(subparsers, common)`` and sets
``func(args, settings) -> int`` on its parser. Heavy imports (torch, models) happen inside ``func``
so that ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from omni_agent import __version__
from omni_agent.logging_utils import setup_logging
from omni_agent.preflight import PreflightError
from omni_agent.settings import Settings, SettingsError, load_settings

EXIT_USAGE = 2  # argparse's own exit code for bad usage; config errors use it too


def add_setting_flag(parser: argparse.ArgumentParser, flag: str, field: str, **kwargs: Any) -> None:
    """Add a flag that feeds the settings field ``field`` (dotted) only when given."""
    parser.add_argument(flag, dest=f"setting:{field}", default=argparse.SUPPRESS, **kwargs)


def common_parser() -> argparse.ArgumentParser:
    """Flags every subcommand accepts: config file, log level and the model to run."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE", help="TOML settings file (also OMNI_AGENT_CONFIG)")
    add_setting_flag(g, "--log-level", "log_level", choices=["debug", "info", "warning", "error"],
                     help="logging level (default info)")
    add_setting_flag(g, "--preset", "model.preset", choices=["tiny", "ming-lite-omni-1.5"],
                     help="model preset when no checkpoint is given (default tiny)")
    add_setting_flag(g, "--model-path", "model.path", metavar="DIR",
                     help="checkpoint folder in Ming's layout (config.json + safetensors)")
    add_setting_flag(g, "--device", "model.device", metavar="DEVICE", help="torch device (default cpu)")
    add_setting_flag(g, "--dtype", "model.dtype", choices=["float32", "bfloat16", "float16"],
                     help="weight dtype (default float32)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni-agent",
        description="Serve a Ming-Omni-style omni model and run voice, vision, image and Android agents on it.",
    )
    parser.add_argument("--version", action="version", version=f"omni-agent {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_parser()
    import omni_agent.commands as commands_pkg

    for mod in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"omni_agent.commands.{mod.name}")
        module.register(subparsers, common)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    flags = {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("setting:")}
    return load_settings(flags=flags, config_file=getattr(args, "config", None))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = settings_from_args(args)
    except SettingsError as e:
        print(f"omni-agent: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(settings.log_level)
    try:
        return int(args.func(args, settings) or 0)
    except PreflightError as e:  # found before any model was built: one line, no traceback
        print(f"omni-agent: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
