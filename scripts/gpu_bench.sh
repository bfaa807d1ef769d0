#!/usr/bin/env bash
# One prepared command for a lent GPU machine (H200): real-size modules with random bf16 weights,
# one JSON line at the end. Issue 20's figures; must finish within 8 minutes (one run and one rerun
# fit a 15-minute slot, start-up included).
#
#   bash scripts/gpu_bench.sh                       # on the GPU machine, from the repo root
#   bash scripts/gpu_bench.sh --prepare-wheels      # here, before: lock-pinned cp312 wheels into .whl/
#   GPU_BENCH_CPU_SMOKE=1 GPU_BENCH_PYTHON=/work/main/.venv/bin/python bash scripts/gpu_bench.sh  # plumbing, CPU
#
# Installing: the GPU machine reaches no registry. Its image has python3 3.12 with torch 2.11.0
# (the lock's pin), numpy, tokenizers and safetensors; the script checks every package it imports
# against requirements.lock and installs pinned wheels carried in .whl/ (made by --prepare-wheels
# here; carry ".whl" in the run) into /tmp/site. A version that differs from the lock is reported
# in "deps_mismatch", never silently replaced.
#
# Parts (each a script printing one JSON object on its last line; absent or failing -> null plus the
# reason under "missing"):
#   thinker  scripts/gpu_thinker_decode.py (this issue): prefill tok/s, decode ms/token at batch 1/8/16
#            with the grouped MoE, batch 1 with the per-expert loop, bf16 grouped-vs-loop difference
#   talker   scripts/gpu_talker.py   --json: talker_tok_s
#   speech   scripts/gpu_speech.py   --json: detok_rtf, first_audio_ms_c1, first_audio_ms_c8 (VAD stop ->
#            first audio packet through the realtime server)
#   dit      scripts/gpu_diffusion_step.py --json: s/step at 1024x1024, two-scale (3-branch) guidance
#   vllm     scripts/gpu_vllm.py     --json: vllm_prefill_tok_s, vllm_decode_ms_b1/b8/b16 (issue 15)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
LOCK=requirements.lock
WHEEL_PACKAGES=${WHEEL_PACKAGES:-"diffusers av soundfile"}  # imported by parts, absent from the GPU image

pin() { grep -E "^$1==" "$LOCK" | head -1 | sed -E 's/^[^=]+==([^ ]+).*/\1/'; }

if [ "${1:-}" = "--prepare-wheels" ]; then
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
  for p in $WHEEL_PACKAGES; do
    v=$(pin "$p"); [ -n "$v" ] || { echo "gpu_bench: $p is not in $LOCK" >&2; exit 1; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .whl "$p==$v" || exit 1
  done
  ls -la .whl; exit 0
fi

START=$(date +%s)
DEADLINE=${GPU_BENCH_DEADLINE_S:-470}  # stop starting parts after this many seconds
OUTDIR=$(mktemp -d)
PY=${GPU_BENCH_PYTHON:-python3}
if [ -z "${GPU_BENCH_PYTHON:-}" ] && [ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  PY=.venv/bin/python
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# Installed versions against the lock, for the packages the parts import.
$PY - "$LOCK" > "$OUTDIR/deps.json" <<'PYEOF'
import json, re, sys
from importlib import metadata
lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", open(sys.argv[1]).read(), re.M))
out = {}
for name in ("torch", "numpy", "tokenizers", "safetensors", "pillow", "transformers", "diffusers", "av", "soundfile"):
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    want = lock.get(name)
    if want and (have is None or have.split("+")[0] != want):
        out[name] = {"lock": want, "installed": have}
print(json.dumps(out))
PYEOF

run_part() {  # name timeout_s script args...
  local name=$1 limit=$2 script=$3; shift 3
  local left=$(( DEADLINE - ($(date +%s) - START) ))
  if [ ! -f "$script" ]; then echo "$script is not in this tree" > "$OUTDIR/$name.err"; return; fi
  if [ "$left" -lt 20 ]; then echo "skipped: the 8-minute budget was used up by earlier parts" > "$OUTDIR/$name.err"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name ($script, up to ${limit}s)" >&2
  timeout "$limit" $PY "$script" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  tail -n 30 "$OUTDIR/$name.log" >&2
  if [ $rc -ne 0 ]; then
    echo "exit $rc$([ $rc -eq 124 ] && echo ' (timed out)'): $(grep -v '^\s*$' "$OUTDIR/$name.log" | tail -n 1 | cut -c1-300)" > "$OUTDIR/$name.err"
  else
    tail -n 1 "$OUTDIR/$name.log" > "$OUTDIR/$name.json"
  fi
}

THINKER_ARGS="--batches 1 8 16 --prompt 128 --steps 32 --warmup 4 --prefill 1024 --compare-loop"
# GPU_BENCH_CPU_SMOKE=1: the tiny thinker on CPU, to check this script's plumbing without a GPU.
[ "${GPU_BENCH_CPU_SMOKE:-0}" = 1 ] && THINKER_ARGS="--cpu-smoke --batches 1 8 --steps 2 --warmup 1 --prefill 32 --compare-loop"
# shellcheck disable=SC2086
run_part thinker 210 scripts/gpu_thinker_decode.py $THINKER_ARGS
run_part speech 75 scripts/gpu_speech.py --json
run_part talker 45 scripts/gpu_talker.py --json
run_part dit 75 scripts/gpu_diffusion_step.py --json --steps 5 --warmup 2
run_part vllm 45 scripts/gpu_vllm.py --json

$PY - "$OUTDIR" "$START" <<'PYEOF'
import json, pathlib, sys, time
out, start = pathlib.Path(sys.argv[1]), int(sys.argv[2])
parts, missing = {}, {}
for name in ("thinker", "speech", "talker", "dit", "vllm"):
    j, e = out / f"{name}.json", out / f"{name}.err"
    try:
        parts[name] = json.loads(j.read_text()) if j.exists() else None
    except json.JSONDecodeError:
        parts[name] = None
        missing[name] = "last output line is not JSON: " + j.read_text()[:200]
    if parts[name] is None and name not in missing:
        missing[name] = e.read_text().strip() if e.exists() else "no output"

def pick(part, *keys):
    d = parts.get(part) or {}
    return next((d[k] for k in keys if k in d), None)

try:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception:  # noqa: BLE001 - reported, not fatal
    gpu = None
result = {
    "gpu": gpu,
    "thinker_prefill_tok_s": pick("thinker", "prefill_tok_s"),
    "thinker_decode_ms_b1": pick("thinker", "b1_ms_per_step"),
    "thinker_decode_ms_b8": pick("thinker", "b8_ms_per_step"),
    "thinker_decode_ms_b16": pick("thinker", "b16_ms_per_step"),
    "thinker_decode_ms_b1_moe_loop": pick("thinker", "b1_ms_per_step_moe_loop"),
    "thinker_decode_bound_ms_b1": pick("thinker", "b1_bound_ms"),
    "thinker_moe_impl": pick("thinker", "moe_impl"),
    "thinker_moe_bf16_max_abs_diff": pick("thinker", "moe_bf16_max_abs_diff"),
    "thinker_weights_gib": pick("thinker", "weights_gib"),
    "talker_tok_s": pick("talker", "talker_tok_s", "tok_s"),
    "detok_rtf": pick("speech", "detok_rtf", "rtf"),
    "first_audio_ms_c1": pick("speech", "first_audio_ms_c1"),
    "first_audio_ms_c8": pick("speech", "first_audio_ms_c8"),
    "dit_s_per_step_1024_two_scale": pick("dit", "edit_3branch_s_per_step"),
    "vllm_prefill_tok_s": pick("vllm", "vllm_prefill_tok_s", "prefill_tok_s"),
    "vllm_decode_ms_b1": pick("vllm", "vllm_decode_ms_b1", "b1_ms_per_step"),
    "vllm_decode_ms_b8": pick("vllm", "vllm_decode_ms_b8", "b8_ms_per_step"),
    "vllm_decode_ms_b16": pick("vllm", "vllm_decode_ms_b16", "b16_ms_per_step"),
    "deps_mismatch": json.loads((out / "deps.json").read_text() or "{}"),
    "missing": missing,
    "parts": parts,
    "elapsed_s": round(time.time() - start, 1),
}
print(json.dumps(result))
PYEOF
