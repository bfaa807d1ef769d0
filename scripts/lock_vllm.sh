#!/usr/bin/env bash
# Regenerate requirements-vllm.lock (the vLLM side environment, see scripts/setup_vllm.sh) from
# requirements-vllm.in, with hashes. Commit both files together; `make vllm` then rebuilds .venv-vllm.
#
# torch 2.13.0+cpu comes from the wheel directory (VLLM_TORCH_WHEELS, default /opt/wheels); PyPI's
# torchvision/torchaudio/torchcodec are CUDA builds that cannot load against it, so they are excluded
# from the resolution (vLLM imports them lazily; the plugin never needs them).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${VLLM_TORCH_WHEELS:-/opt/wheels}
printf 'torchvision\ntorchaudio\ntorchcodec\n' > "${TMPDIR:-/tmp}/vllm-excludes.txt"
uv pip compile requirements-vllm.in --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --no-header --find-links "$WHEELS" \
  --excludes "${TMPDIR:-/tmp}/vllm-excludes.txt" -o requirements-vllm.lock "$@"
