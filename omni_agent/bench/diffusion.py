"""``omni-agent bench diffusion``: denoising-step cost of the tiny DiT on CPU.

Keys (contract): ``step_ms_256``, ``step_ms_512`` (text-to-image step with CFG, two branches batched,
at 256^2 / 512^2), ``batched_cfg_speedup`` (an edit step's three guidance branches as three sequential
DiT calls, divided by the same three as one batched call, measured in the same run, interleaved; at
64^2 by default, where per-call overhead dominates on a CPU; ``batched_cfg_speedup_256`` gives the same
at 256^2), ``edit_over_gen_ratio`` (edit step with three branches and reference tokens / generation
step, 256^2), ``ming_tensors_loaded`` / ``ming_tensors_expected`` (tensors our strict loader read from a
folder in Ming's release layout -- the tiny one Ming's own code wrote for the fixtures when the source
tree has it, else the tiny preset saved in that layout (``ming_layout_source`` says which) -- and
tensors our modules hold; equal or the load fails). A "step" is the DiT call(s) (Ming's DiT with its
refiners), the guidance combination and the scheduler update; VAE, connector and MLP run once per
image and are excluded. Times are best-of-N (see ``_best_ms``). Weights are
random (the tiny preset): these are cost figures only. Options: ``reps``, ``threads``, ``speedup_size``.
"""

from __future__ import annotations

import time
from typing import Any

from omni_agent.bench import BenchContext, benchmark


def _best_ms(fn: Any, reps: int) -> float:
    """Best of ``reps`` timed runs after one warm-up: on a shared, loaded CPU the minimum is the
    stable estimate of the uncontended cost (medians moved by 2-3x between runs)."""
    fn()  # warm-up (allocator, kernels)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


@benchmark("diffusion", "tiny DiT on CPU: ms/step at 256/512, batched-CFG speedup, edit/gen step ratio")
def run(ctx: BenchContext) -> dict[str, Any]:
    import torch

    reps = 3 if ctx.quick else int(ctx.options.get("reps", 15))
    threads_before = torch.get_num_threads()
    # One intra-op thread by default: on a small shared CPU, 2-thread runs of a model this small were
    # dominated by thread contention (10x noisier and slower). --opt threads=N to change it.
    torch.set_num_threads(int(ctx.options.get("threads", 1)))
    try:
        return _measure(ctx, reps)
    finally:
        torch.set_num_threads(threads_before)


def _measure(ctx: BenchContext, reps: int) -> dict[str, Any]:
    import torch

    from generation.guidance import plan_guidance
    from generation.pipeline import OmniImagePipeline

    pipe = OmniImagePipeline.from_preset("tiny", seed=0)
    sched = pipe.scheduler
    sched.set_timesteps(30)
    t = sched.timesteps[5]
    g = torch.Generator().manual_seed(0)
    cfg = pipe.config
    with torch.inference_mode():
        cond = pipe.bridge.condition(torch.randn(1, cfg.num_query_tokens, cfg.llm_hidden_size, generator=g))

        def latents(size: int) -> torch.Tensor:
            f = pipe.vae_scale_factor
            return torch.randn(1, cfg.dit.in_channels, size // f, size // f, generator=g)

        gen = plan_guidance(edit=False, s_txt=5.0, s_img=1.0)
        edit = plan_guidance(edit=True, s_txt=5.0, s_img=1.5)  # three branches

        def step(x: torch.Tensor, ref: torch.Tensor | None, plan: Any, batched: bool = True) -> None:
            sched._step_index = 5  # keep the scheduler at the same step on every repeat
            _, v = pipe.velocities(x, t, pipe.branch_inputs(plan, cond, ref), plan, batched=batched)
            sched.step(v, t, x, return_dict=False)

        x256, x512 = latents(256), latents(512)
        step_256 = _best_ms(lambda: step(x256, None, gen), reps)
        step_512 = _best_ms(lambda: step(x512, None, gen), max(1, reps // 3) if ctx.quick else reps)

        def speedup(size: int, n: int) -> tuple[float, float]:
            """(sequential ms, batched ms) of a three-branch edit step, interleaved under the same load."""
            x, ref = latents(size), latents(size)
            seq, bat = [], []
            for _ in range(n):
                seq.append(_best_ms(lambda: step(x, ref, edit, batched=False), 1))
                bat.append(_best_ms(lambda: step(x, ref, edit, batched=True), 1))
            return min(seq), min(bat)

        size = int(ctx.options.get("speedup_size", 64))
        seq_ms, bat_ms = speedup(size, 4 * reps)  # a few ms each: more samples for a stable minimum
        seq_256, edit_ms = speedup(256, reps)
    return {
        "step_ms_256": round(step_256, 3),
        "step_ms_512": round(step_512, 3),
        "batched_cfg_speedup": round(seq_ms / bat_ms, 3),
        "batched_cfg_speedup_size": size,
        "batched_cfg_speedup_256": round(seq_256 / edit_ms, 3),
        "edit_over_gen_ratio": round(edit_ms / step_256, 3),
        "edit_step_ms_256": round(edit_ms, 3),
        "threads": torch.get_num_threads(),
        "dit_params": sum(p.numel() for p in pipe.transformer.parameters()),
        **_ming_layout_counts(pipe),
        "quick": ctx.quick,
    }


def _ming_layout_counts(pipe: Any) -> dict[str, Any]:
    """Load a folder in Ming's release layout with the strict loader and count its tensors."""
    import tempfile
    from pathlib import Path

    from generation.pipeline import OmniImagePipeline

    fixture = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "ming_imagegen" / "release"
    if fixture.is_dir():
        loaded, source = OmniImagePipeline.from_pretrained(fixture), "ming-code-fixture"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            pipe.save_pretrained(tmp)
            loaded, source = OmniImagePipeline.from_pretrained(tmp), "tiny-preset-saved"
    rep = loaded.load_report
    return {"ming_tensors_loaded": rep["loaded"], "ming_tensors_expected": rep["expected"],
            "ming_layout_source": source}
