"""One module per ``omni-agent`` subcommand; see ``omni_agent.cli``."""
