#!/usr/bin/env python
"""Seconds per denoising step of an SD3-medium-size MMDiT at 1024x1024 with two-scale guidance.

    .venv/bin/python scripts/gpu_diffusion_step.py [--size 1024] [--steps 10] [--json]
    .venv/bin/python scripts/gpu_diffusion_step.py --device cpu --preset tiny --size 256   # a dry run

Random bf16 weights (the ``ming-lite-omni-1.5`` decoder preset: Ming's SD3-medium subclass, 24 joint
layers, width 1536, patch 2, 16 latent channels, plus its noise refiner, reference patch embedding and
reference refiner) -- the cost does not depend on the values. One step = one DiT call with the edit's
guidance branches batched (Ming's cfg_mode 1 with image guidance 1.5: uncond, image, full; batch 3),
each carrying the target's 64x64 latent patches (4096 tokens at 1024^2, through the noise refiner)
plus the reference image's 4096 tokens (through the reference refiner) and 256 condition tokens, then
the guidance combination and the Euler update. Also timed: text-to-image with two branches (no
reference tokens), which is the set-up Ovis-Image's published figure uses. (Ming's own generate()
snaps sizes to ~512^2 buckets; this script calls the DiT directly at the requested size.)

Reference point: Ovis-Image (7B) reports about 0.27 s/step on an H100 at 1024^2 with real CFG. The
models differ (2B MMDiT here), so the comparison places the cost, it does not rank the models.
Needs CUDA; exits with a clear message otherwise. No figures are claimed until it has been run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

OVIS_IMAGE_S_PER_STEP = 0.27  # Ovis-Image technical report, H100, 1024^2, real CFG


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps after warm-up (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the same code)")
    ap.add_argument("--preset", default="ming-lite-omni-1.5", help="decoder preset (tiny for a dry run)")
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_diffusion_step: needs a CUDA GPU (torch.cuda.is_available() is False); nothing measured",
              file=sys.stderr)
        return 2

    from generation.guidance import plan_guidance
    from generation.pipeline import OmniImagePipeline

    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    pipe = OmniImagePipeline.from_preset(args.preset, seed=0, device=dev, dtype=dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cfg = pipe.config
    f = pipe.vae_scale_factor
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(1, cfg.dit.in_channels, args.size // f, args.size // f, generator=g, device=dev)
    ref = torch.randn(x.shape, generator=g, device=dev).to(dtype)
    pipe.scheduler.set_timesteps(30, device=dev)
    t = pipe.scheduler.timesteps[5]

    with torch.inference_mode():
        query = torch.randn(1, cfg.num_query_tokens, cfg.llm_hidden_size, generator=g, device=dev)
        cond = pipe.bridge.condition(query.to(dtype))

        def per_step(plan, reference) -> float:
            branches = pipe.branch_inputs(plan, cond, reference)

            def step() -> None:
                pipe.scheduler._step_index = 5
                _, v = pipe.velocities(x, t, branches, plan, batched=True)
                pipe.scheduler.step(v, t, x, return_dict=False)

            for _ in range(args.warmup):
                step()
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            return (time.perf_counter() - t0) / args.steps

        edit_s = per_step(plan_guidance(edit=True, s_txt=5.0, s_img=1.5), ref)
        gen_s = per_step(plan_guidance(edit=False, s_txt=5.0, s_img=1.0), None)

    result = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "preset": args.preset,
        "size": args.size,
        "dit_params": sum(p.numel() for p in pipe.transformer.parameters()),
        "edit_3branch_s_per_step": round(edit_s, 4),
        "gen_cfg_2branch_s_per_step": round(gen_s, 4),
        "ovis_image_h100_s_per_step": OVIS_IMAGE_S_PER_STEP,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
    }
    for k, v in result.items():
        print(f"{k:28s} {v}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
