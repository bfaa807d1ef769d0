"""Real-size Ming-Lite-Omni 1.5 LLM through vLLM with the plugin on one GPU, next to the embedded engine.

Writes the ``ming-lite-omni-1.5`` preset's ``config.json`` (+ tokenizer.json) to a folder, runs
``omni_agent_vllm.decode_bench`` in the vLLM environment with ``--load-format dummy`` (random bf16 weights:
no 34 GB checkpoint needed), then ``scripts/gpu_thinker_decode.py`` (the embedded thinker, random bf16
weights) in this environment, and prints decode ms/token at batch 1 and 16 for both next to the
memory-bandwidth bound (~1.2 ms/token at batch 1 on an H200: ~2.5B parameters read per step).

    python scripts/gpu_vllm.py [--vllm-python PATH] [--batches 1 16] [--bandwidth-gbs 4800] [--enforce-eager]

The vLLM environment on a GPU machine is the official CUDA build plus the plugin (README, "vLLM on
GPUs"): ``pip install vllm && pip install --no-deps ./vllm_plugin``; pass its Python with
``--vllm-python`` (default: ``OMNI_VLLM_PYTHON`` or ``.venv-vllm``). Exits with status 2 without
CUDA. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _last_json(stdout: str) -> dict:
    """The last JSON object line (vLLM logs to stdout too, also after the result)."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm-python", default=None)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--bandwidth-gbs", type=float, default=4800.0, help="HBM bandwidth (H200: 4.8 TB/s)")
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--skip-embedded", action="store_true")
    a = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_vllm: error: no CUDA device; this script measures GPU decode speed", file=sys.stderr)
        return 2
    from omni_agent.engine.vllm_server import vllm_python
    from omni_agent.model.config import ThinkerConfig
    from omni_agent.model.processor import TINY_TOKENIZER
    from scripts.gpu_thinker_decode import bytes_per_step

    cfg = ThinkerConfig.preset("ming-lite-omni-1.5")
    py = a.vllm_python or vllm_python()
    out: dict[str, object] = {"device": torch.cuda.get_device_name(0), "batches": a.batches}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg.to_ming_dict(), indent=2))
        (Path(tmp) / "tokenizer.json").write_bytes(TINY_TOKENIZER.read_bytes())  # media special tokens only
        cmd = [py, "-m", "omni_agent_vllm.decode_bench", tmp, "--batches", *map(str, a.batches),
               "--prompt", str(a.prompt), "--steps", str(a.steps)] + (["--enforce-eager"] if a.enforce_eager else [])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            return 1
        out["vllm"] = _last_json(proc.stdout)
    if not a.skip_embedded:
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_thinker_decode.py"), "--batches",
                               *map(str, a.batches), "--prompt", str(a.prompt), "--steps", str(a.steps)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        if proc.returncode == 0:
            out["embedded"] = _last_json(proc.stdout)
        else:
            out["embedded_error"] = proc.stderr[-2000:]
    for b in a.batches:
        params, nbytes = bytes_per_step(cfg, b)
        bound = 1000 * nbytes / (a.bandwidth_gbs * 1e9)
        out[f"b{b}_bound_ms"] = round(bound, 3)
        ms = out["vllm"].get(f"b{b}_ms_per_step")  # type: ignore[union-attr]
        print(f"batch {b:3d}: vLLM {ms} ms/step, embedded "
              f"{(out.get('embedded') or {}).get(f'b{b}_ms_per_step')} ms/step, bound {bound:.2f} ms "
              f"({params / 1e9:.2f}B params read)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
