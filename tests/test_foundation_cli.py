"""The CLI surface and the settings precedence (flag > env > file > default)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omni_agent.cli import build_parser, main
from omni_agent.settings import SettingsError, load_settings

REQUIRED_SUBCOMMANDS = {"serve", "chat", "demo", "bench"}


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    listed = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    present = REQUIRED_SUBCOMMANDS & listed
    assert {"demo", "bench"} <= present
    for name in present:
        assert name in out


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("omni-agent ")


def test_console_script_runs():
    exe = Path(sys.executable).with_name("omni-agent")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "bench" in out.stdout


def test_defaults():
    s = load_settings(env={})
    assert s.server.port == 8000
    assert s.model.preset == "tiny"
    assert s.log_level == "info"


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    cfg = tmp_path / "omni.toml"
    cfg.write_text('log_level = "warning"\n[server]\nport = 7001\nhost = "0.0.0.0"\n[engine]\nmax_batch_size = 3\n')
    env = {"OMNI_AGENT_SERVER__PORT": "7002", "OMNI_AGENT_ENGINE__MAX_BATCH_SIZE": "5"}
    s = load_settings(flags={"server.port": 7003}, env=env, config_file=cfg)
    assert s.server.port == 7003  # flag wins
    assert s.engine.max_batch_size == 5  # env beats file
    assert s.server.host == "0.0.0.0"  # file beats default
    assert s.log_level == "warning"
    assert s.model.dtype == "float32"  # default
    s = load_settings(env=env, config_file=cfg)
    assert s.server.port == 7002


def test_env_lists_are_json():
    s = load_settings(env={"OMNI_AGENT_SERVER__ALLOWED_ORIGINS": '["http://a", "http://b"]'})
    assert s.server.allowed_origins == ["http://a", "http://b"]


def test_config_file_from_env_variable(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nseed = 11\n")
    assert load_settings(env={"OMNI_AGENT_CONFIG": str(cfg)}).model.seed == 11


@pytest.mark.parametrize(
    ("content", "env", "needle"),
    [
        ("[server]\nport = 'not-a-port'\n", {}, "server.port"),
        ("[server]\nport = 70000\n", {}, "server.port"),
        ("[model]\nunknown_field = 1\n", {}, "model.unknown_field"),
        ("this is = = not toml", {}, "not valid TOML"),
        ("", {"OMNI_AGENT_MODEL__DTYPE": "int3"}, "OMNI_AGENT_MODEL__DTYPE"),
    ],
)
def test_invalid_settings_name_the_field(tmp_path, content, env, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(SettingsError) as exc:
        load_settings(env=env, config_file=cfg)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cli_invalid_config_is_one_line_and_exit_2(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\nport = 'x'\n")
    rc = main(["bench", "list", "--config", str(cfg)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server.port" in err[0]


def test_cli_missing_config_file(tmp_path, capsys):
    rc = main(["bench", "list", "--config", str(tmp_path / "nope.toml")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_bench_unknown_name_is_an_error(capsys):
    assert main(["bench", "no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_bench_json_is_last_line(capsys, monkeypatch):
    from omni_agent import bench

    monkeypatch.setitem(bench._REGISTRY, "_probe", bench.Benchmark("_probe", lambda ctx: {"x": 1.5, "quick": ctx.quick}, "t"))
    monkeypatch.setattr(bench, "registry", lambda: dict(bench._REGISTRY))
    assert main(["bench", "_probe", "--json", "--quick"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"x": 1.5, "quick": True}
