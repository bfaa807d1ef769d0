"""The ``image`` CLI (tiny random weights) and the diffusion benchmark's quick smoke run."""

import numpy as np
import PIL.Image
import pytest

from omni_agent.cli import main


def test_cli_generate_edit_segment(tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["image", "generate", "a red cube", "-o", str(out), "--height", "32", "--width", "48",
                 "--exact-size", "--steps", "2", "--no-progress"]) == 0
    assert PIL.Image.open(out).size == (48, 32)
    src = tmp_path / "in.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(src)
    edited = tmp_path / "e.png"
    assert main(["image", "edit", str(src), "make it blue", "-o", str(edited), "--steps", "1",
                 "--image-guidance", "1.5", "--no-progress"]) == 0
    assert PIL.Image.open(edited).size == (608, 416)  # Ming's bucket for 37x53 (h x w)
    mask = tmp_path / "m.png"
    assert main(["image", "segment", str(src), "the cube", "-o", str(mask), "--steps", "1", "--no-progress"]) == 0
    assert PIL.Image.open(mask).size == (53, 37)
    captured = capsys.readouterr()
    assert "RANDOM weights" in captured.err


def test_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"hello, not an image")
    assert main(["image", "edit", str(bad), "x", "-o", str(tmp_path / "o.png"), "--steps", "1",
                 "--no-progress"]) == 1
    assert "not an image" in capsys.readouterr().err
    assert main(["image", "generate", "x", "-o", str(tmp_path / "o.png"), "--height", "0", "--no-progress"]) == 1
    assert "positive" in capsys.readouterr().err


def test_bench_quick_smoke_keys():
    from omni_agent.bench import BenchContext, registry
    from omni_agent.settings import load_settings

    bench = registry()["diffusion"]
    result = bench.fn(BenchContext(settings=load_settings(env={}), quick=True))
    for key in ("step_ms_256", "step_ms_512", "batched_cfg_speedup", "edit_over_gen_ratio"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["ming_tensors_loaded"] == result["ming_tensors_expected"] == 340
    assert result["ming_layout_source"] == "ming-code-fixture"


def _gpu_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_diffusion_step.py"
    spec = importlib.util.spec_from_file_location("gpu_diffusion_step", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_script_refuses_clearly_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the gpu-marked test runs the script instead")
    assert _gpu_script().main(["--steps", "1"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu_script_measures_a_step(capsys):
    assert _gpu_script().main(["--size", "512", "--steps", "2", "--warmup", "1", "--json"]) == 0
    assert "edit_3branch_s_per_step" in capsys.readouterr().out


def test_gpu_script_dry_run_on_cpu(capsys):
    assert _gpu_script().main(["--device", "cpu", "--preset", "tiny", "--size", "128", "--steps", "1",
                               "--warmup", "1", "--json"]) == 0
    assert '"edit_3branch_s_per_step"' in capsys.readouterr().out
