#!/usr/bin/env bash
# Bootstrap a fresh machine (Debian, Python 3.11, root): apt packages, .venv from the lock, editable install,
# then a check that the native parts load. Idempotent: a second run checks and returns in seconds.
#
# The lock (requirements.lock) pins every dependency, transitive ones included, with hashes; it is made by
# `scripts/lock.sh` from pyproject.toml's ranges. When the lock changes the venv is rebuilt from scratch, so
# nothing outside the lock survives in it.
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng: test speech; ffmpeg/sox: media tools; adb: Android; chromium + CJK fonts: the web page's tests.
APT_PACKAGES=(libportaudio2 espeak-ng ffmpeg adb sox chromium chromium-driver fonts-noto-cjk)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.omni-agent-installed"

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pip, quietly; a machine-wide pip.conf may name local indexes that do not exist, which pip reports per package.
pip_install() {
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# The stamp names everything the install depends on; a different stamp means a rebuild.
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)-$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  [ -d "$VENV" ] && echo "setup: requirements.lock or pyproject.toml changed: rebuilding $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  echo "setup: installing requirements.lock into $VENV (a cold cache downloads about 3 GB of torch wheels)"
  # The lock is exact and hashed; --no-deps because it already lists every transitive dependency.
  pip_install --require-hashes --no-deps -r requirements.lock
  pip_install --no-deps --no-build-isolation -e .
fi
# Runs every time (3 s): a venv that was fine yesterday can break when a system library changes.
if ! "$VENV/bin/python" -m omni_agent.doctor; then
  rm -f "$STAMP"
  echo "setup: FAILED: the native check above did not pass; the install is not marked done" >&2
  exit 1
fi
echo "$want" > "$STAMP"
# The vLLM side environment (.venv-vllm), which the default test run uses (tests/test_vllm_*.py); it has
# its own lock and stamp, so this returns at once when nothing changed. OMNI_VLLM_SETUP=0 skips it (the vLLM tests then fail, saying so).
if [ "${OMNI_VLLM_SETUP:-1}" != "0" ]; then
  bash scripts/setup_vllm.sh
fi
echo "setup: ready ($VENV)"
