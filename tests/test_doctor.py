"""The environment check: torch and torchaudio must be the exact pair ``requirements.lock`` pins."""

from __future__ import annotations

from importlib import metadata

from omni_agent.cli import main
from omni_agent.doctor import LOCK_FILE, check_locked_pair, locked_versions


def test_the_lock_pins_the_pair():
    pins = locked_versions()
    assert pins["torch"] and pins["torchaudio"]


def test_this_environment_has_the_locked_pair():
    # Fails when the venv's torch/torchaudio drift from the lock (the torchaudio 2.11.1 breakage).
    assert check_locked_pair() is None, check_locked_pair()


def test_a_mismatched_pair_is_reported():
    pins = locked_versions()

    def installed(name: str) -> str:
        return "2.11.1" if name == "torchaudio" else pins[name] + "+cpu"  # a local build tag is the same release

    assert check_locked_pair(installed) == (
        f"torchaudio 2.11.1 is installed but {LOCK_FILE.name} pins {pins['torchaudio']} (run `make setup`)")


def test_a_missing_package_is_reported():
    def installed(name: str) -> str:
        if name == "torch":
            raise metadata.PackageNotFoundError(name)
        return "0"

    assert check_locked_pair(installed) == "torch is not installed (run `make setup`)"


def test_doctor_command(capsys, monkeypatch):
    import omni_agent.doctor as doctor

    monkeypatch.setattr(doctor, "CHECKS", {"torch/torchaudio pair": lambda: None,
                                           "broken": lambda: "libfoo.so: undefined symbol: bar"})
    assert main(["doctor"]) == 1
    assert capsys.readouterr().err.strip() == "omni-agent doctor: broken: libfoo.so: undefined symbol: bar"
    monkeypatch.setattr(doctor, "CHECKS", {"torch/torchaudio pair": check_locked_pair})
    assert main(["doctor"]) == 0
    assert "1 native checks passed" in capsys.readouterr().out
