"""``omni-agent image generate|edit|segment``: the diffusion decoder from the command line.

    omni-agent image generate "a red cube on a table" -o out.png
    omni-agent image edit in.png "make the cube blue" -o out.png
    omni-agent image segment in.png "the cube" -o mask.png

Without ``--model-path`` the decoder (and the thinker that conditions it) is the tiny preset with
RANDOM weights: the pipeline runs end to end but the pictures are noise-like, not the prompt.
``--backend CLASS --backend-path DIR`` runs any diffusers pipeline instead (its own text encoder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from omni_agent.settings import Settings


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "image", help="generate, edit or segment images with the diffusion decoder",
        description="Image generation, editing and segmentation. Without --model-path the weights are "
                    "RANDOM (tiny preset): the pipeline runs but the images do not depict the prompt.")
    sub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)

    def shared(q: argparse.ArgumentParser) -> None:
        q.add_argument("-o", "--output", required=True, metavar="PNG", help="output image file")
        q.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
        q.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
        q.add_argument("--guidance", type=float, default=5.0, help="text guidance scale s_txt (default 5.0)")
        q.add_argument("--no-progress", action="store_true", help="no progress bar")
        q.add_argument("--backend", metavar="CLASS", help="a diffusers pipeline class, e.g. OvisImagePipeline")
        q.add_argument("--backend-path", metavar="DIR", help="folder for --backend (from_pretrained)")
        q.set_defaults(func=run)

    g = sub.add_parser("generate", parents=[common], help="text to image")
    g.add_argument("prompt")
    g.add_argument("--height", type=int, default=512,
                   help="pixels (default 512); snapped to Ming's closest ~512^2 aspect bucket unless --exact-size")
    g.add_argument("--width", type=int, default=512, help="pixels (default 512); see --height")
    g.add_argument("--exact-size", action="store_true",
                   help="generate at exactly --height x --width (multiples of 16) instead of Ming's bucket")
    shared(g)
    for name, helptext in (("edit", "edit an image following an instruction"),
                           ("segment", "segment a target (an edit that paints it, then a difference mask)")):
        e = sub.add_parser(name, parents=[common], help=helptext)
        e.add_argument("image", help="input image file")
        e.add_argument("prompt" if name == "edit" else "target")
        e.add_argument("--image-guidance", type=float, default=1.0,
                       help="image guidance scale s_img (default 1.0; only above 1 adds image guidance)")
        e.add_argument("--guidance-mode", type=int, default=1, choices=[1, 2, 3, 4, 5, 6],
                       help="Ming's cfg_mode 1-6 when --image-guidance > 1 (default 1; see docs/diffusion.md)")
        if name == "segment":
            e.add_argument("--colour", default="red", choices=["red", "green", "blue"], help="paint colour")
            e.add_argument("--threshold", type=int, default=48, help="difference threshold 0..255 (default 48)")
            e.add_argument("--save-edit", metavar="PNG", help="also save the painted edit")
        shared(e)


class _Progress:
    """A tqdm bar opened at the first step (so model loading does not count as denoising time)."""

    def __init__(self, enabled: bool, steps: int):
        self.enabled, self.steps, self.bar = enabled, steps, None

    def __call__(self, info: Any) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.steps, desc="denoising", unit="step", disable=not self.enabled,
                            file=sys.stderr)
        self.bar.update(info.step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from generation.images import ImageInputError
    from generation.pipeline import GenerationCancelled
    from omni_agent.preflight import (
        PreflightError,
        building,
        check_device,
        check_input_file,
        check_model_path,
        check_output_file,
        check_positive,
        random_weights_notice,
    )

    # Everything that does not need the model is checked before it is built.
    check_output_file(args.output, "-o")
    if args.image_command != "generate":
        check_input_file(args.image, "image")
    if getattr(args, "save_edit", None):
        check_output_file(args.save_edit, "--save-edit")
    check_positive(args.steps, "--steps")
    if not args.backend:
        check_model_path(settings, "thinker", "image")
    elif not args.backend_path:
        raise PreflightError("--backend needs --backend-path (a local diffusers pipeline folder)")
    elif not Path(args.backend_path).is_dir():  # no hub downloads here: the pipeline must be on disk
        raise PreflightError(f"--backend-path {args.backend_path} is not a folder (a local diffusers pipeline)")
    check_device(settings)
    dtype = getattr(torch, settings.model.dtype)
    bar = _Progress(not args.no_progress, args.steps)
    common = dict(steps=args.steps, seed=args.seed, guidance_text=args.guidance, callback=bar)
    try:
        if args.backend:
            return _run_backend(args, settings, dtype, common)
        from generation.stack import ImageStack

        random_weights_notice(settings, "image")
        with building("the thinker and the diffusion decoder"):
            stack = ImageStack.build(settings.model.path, seed=settings.model.seed, device=settings.model.device,
                                     dtype=dtype)
        print(stack.description, file=sys.stderr)
        if args.image_command == "generate":
            out = stack.generate(args.prompt, height=args.height, width=args.width, exact_size=args.exact_size,
                                 **common)
            out.images[0].save(args.output)
            print(f"wrote {args.output}: {out.width}x{out.height}, {args.steps} steps, "
                  f"branches {'+'.join(out.branches)} batched, {out.seconds:.1f} s")
        elif args.image_command == "edit":
            out = stack.edit(args.image, args.prompt, guidance_image=args.image_guidance,
                             guidance_mode=args.guidance_mode, **common)
            out.images[0].save(args.output)
            print(f"wrote {args.output}: {out.width}x{out.height} (Ming's aspect bucket for the input), "
                  f"branches {'+'.join(out.branches)} batched, {out.seconds:.1f} s")
        else:
            from generation.segmentation import MASK_COLOURS, MaskFilter

            filt = MaskFilter(threshold=args.threshold,
                              colour=None if stack.random_weights else MASK_COLOURS[args.colour])
            seg = stack.segment(args.image, args.target, colour=args.colour, mask_filter=filt,
                                guidance_image=args.image_guidance, guidance_mode=args.guidance_mode, **common)
            import PIL.Image

            PIL.Image.fromarray(seg.mask.astype("uint8") * 255).save(args.output)
            if args.save_edit:
                seg.edited.save(args.save_edit)
            print(f"wrote {args.output}: mask {seg.mask.shape[1]}x{seg.mask.shape[0]}, "
                  f"{int(seg.mask.sum())} pixels set ({100 * seg.mask.mean():.1f}%)")
    except (ImageInputError, FileNotFoundError, ValueError) as e:
        bar.close()
        print(f"omni-agent: error: {e}", file=sys.stderr)
        return 1
    except GenerationCancelled as e:
        bar.close()
        print(f"cancelled: {e}", file=sys.stderr)
        return 130
    finally:
        bar.close()
    return 0


def _run_backend(args: argparse.Namespace, settings: Settings, dtype: Any, common: dict[str, Any]) -> int:
    from generation.backends import DiffusersBackend

    if args.image_command == "segment":
        print("omni-agent: error: segment runs on the built-in decoder only", file=sys.stderr)
        return 2
    backend = DiffusersBackend.load(args.backend, args.backend_path, device=settings.model.device, dtype=dtype)
    if args.image_command == "generate":
        out = backend.generate(args.prompt, height=args.height, width=args.width, **common)
    else:
        out = backend.generate(args.prompt, image=args.image, guidance_image=args.image_guidance, **common)
    out.images[0].save(args.output)
    print(f"wrote {args.output}: {out.width}x{out.height} with {args.backend}, {out.seconds:.1f} s")
    return 0
