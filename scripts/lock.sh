#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml's ranges (runtime + dev extras), with hashes.
# Run after changing a dependency and commit both files together; `make setup` then rebuilds the venv.
# Needs uv (`pip install uv`); the lock it writes is plain pip syntax, installed by pip in scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --no-header -o requirements.lock "$@"
