"""``OmniImagePipeline``: text-to-image, editing and segmentation conditioned on the thinker.

Shaped like a diffusers pipeline: components are injected, ``__call__`` is a short list of numbered
steps, results come back as a dataclass and progress goes through a callback. The components:

- ``bridge``: query-state adapter (``proj_in`` -> connector -> ``proj_out`` -> L2 -> MLP), ``mlp/`` + ``connector/``;
- ``transformer``: ``MingSD3Transformer2DModel`` (diffusers' SD3 plus Ming's refiners), ``transformer/``;
- ``vae``: diffusers ``AutoencoderKL``, ``vae/``;
- ``scheduler``: diffusers ``FlowMatchEulerDiscreteScheduler``, ``scheduler/``.

The call follows Ming's ``generate(image_gen=True)`` -> ``SD3Loss.sample`` -> its SD3 pipeline: sizes
snap to Ming's aspect buckets, an edit image is resized and centre-cropped to its bucket, the null
condition is ``c * 0`` before the MLP, and all guidance branches run in one DiT call per step.

Legend: B batch, K guidance branches, Q query tokens, C latent channels, h/w latent size.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import PIL.Image
import torch
from torch import nn

from generation.bridge import ImageGenBridge
from generation.config import DiffusionConfig
from generation.guidance import GuidancePlan, branch_inputs, plan_guidance
from generation.images import (
    ImageInputError,
    aspect_bucket,
    check_size,
    fit_to_bucket,
    load_image,
    pil_to_tensor,
    tensor_to_uint8,
)
from generation.segmentation import MaskFilter, mask_to_input, recover_mask
from generation.transformer import MingSD3Transformer2DModel

log = logging.getLogger(__name__)

OutputType = Literal["pil", "np", "latent"]
ImageLike = PIL.Image.Image | np.ndarray | bytes | str | Path
StepCallback = Callable[["StepInfo"], None]


class GenerationCancelled(RuntimeError):
    """Raised when the ``cancel`` event/callable fires between two denoising steps."""


class _EventLike(Protocol):
    def is_set(self) -> bool: ...


CancelLike = threading.Event | _EventLike | Callable[[], bool]


@dataclass
class StepInfo:
    """What the progress callback receives after each denoising step."""

    step: int
    """Steps done so far (1..total)."""
    total: int
    timestep: float
    latents: torch.Tensor
    elapsed_s: float


@dataclass
class ImageOutput:
    """Result of one pipeline call.

    Attributes:
        images: PIL images (``output_type="pil"``), an ``[B, H, W, 3]`` uint8 array (``"np"``) or None.
        latents: Final latents ``[B, C, h, w]`` (always returned).
        height: Output height in pixels (Ming's bucket for the requested size or the edit input).
        width: Output width in pixels.
        seed: Seed used for the initial noise.
        branches: Guidance branches run per step (batched into one DiT call).
        seconds: Wall time of the call.
    """

    images: list[PIL.Image.Image] | np.ndarray | None
    latents: torch.Tensor
    height: int
    width: int
    seed: int
    branches: tuple[str, ...]
    seconds: float


@dataclass
class SegmentationOutput:
    """Result of ``OmniImagePipeline.segment``: the mask and the edit it came from."""

    mask: np.ndarray
    """``HxW`` bool mask at the input image's size (mapped back through the bucket crop)."""
    edited: PIL.Image.Image
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class BranchInputs:
    """One step's DiT inputs for all guidance branches, stacked along the batch (``[K*B, ...]``)."""

    hidden: torch.Tensor
    """Text stream after the MLP ``[K*B, Q, J]``."""
    pooled: torch.Tensor
    """Pooled vector ``[K*B, P]``."""
    refs: torch.Tensor | None
    """Reference latents ``[K*B, C, h, w]`` (zeros in the branches without the image) or None."""


class OmniImagePipeline:
    """Diffusion decoder conditioned on the thinker's query-token states.

    Args:
        bridge: Query-state adapter producing the condition, the DiT's text stream and pooled vector.
        transformer: Ming's MMDiT.
        vae: ``AutoencoderKL``.
        scheduler: ``FlowMatchEulerDiscreteScheduler`` (copied per call; the template is never mutated).
        config: The decoder config; derived from the components when None.
    """

    def __init__(self, bridge: ImageGenBridge, transformer: MingSD3Transformer2DModel, vae: nn.Module,
                 scheduler: Any, config: DiffusionConfig | None = None):
        self.bridge = bridge
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.config = config or bridge.config
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.patch_size = transformer.config.patch_size
        self.load_report: dict[str, int] = {}
        """After ``from_pretrained``: tensors expected by the modules and tensors loaded, per part."""

    # ------------------------------------------------------------------ properties

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: VAE factor x DiT patch size (16 for SD3)."""
        return self.vae_scale_factor * self.patch_size

    @property
    def max_side(self) -> int:
        """Largest side the DiT's position-embedding table covers."""
        return self.transformer.config.pos_embed_max_size * self.size_multiple

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> OmniImagePipeline:
        for m in (self.bridge, self.transformer, self.vae):
            if device is not None:
                m.to(device=device)
            if dtype is not None and next(m.parameters()).dtype != dtype:
                m.to(dtype=dtype)
        return self

    # ------------------------------------------------------------------ main entry

    @torch.inference_mode()
    def __call__(
        self,
        condition: torch.Tensor,
        *,
        image: ImageLike | None = None,
        height: int | None = None,
        width: int | None = None,
        steps: int = 30,
        seed: int = 0,
        guidance_text: float = 5.0,
        guidance_image: float = 1.0,
        guidance_mode: int = 1,
        callback: StepCallback | None = None,
        cancel: CancelLike | None = None,
        output_type: OutputType = "pil",
        latents: torch.Tensor | None = None,
        exact_size: bool = False,
    ) -> ImageOutput:
        """Generate (``image=None``) or edit ``image``, conditioned on ``condition``.

        Args:
            condition: ``[B, Q, D_llm]`` last hidden states of the thinker's 16x16 query tokens.
            image: Reference image for editing (PIL, ``HxWx3`` uint8 array, encoded bytes or a path). It
                is resized and centre-cropped to Ming's closest aspect bucket, which is the output size.
            height: Requested height for generation (default 512). Ming snaps (height, width) to the
                closest of its ~512^2 aspect buckets; ``ImageOutput.height/width`` say what was made.
            width: Requested width (see ``height``).
            steps: Denoising steps (Ming's ``image_gen_steps``, default 30).
            seed: Seed of the initial noise (same seed, same inputs -> same image).
            guidance_text: Text guidance scale (Ming's ``image_gen_cfg``), >= 1.
            guidance_image: Image guidance scale (``image_gen_image_cfg``); used for edits above 1 only.
            guidance_mode: Ming's ``image_gen_cfg_mode`` 1-6 (see ``generation.guidance``).
            callback: Called with a ``StepInfo`` after every step.
            cancel: A ``threading.Event``/``asyncio.Event`` or a callable; checked before every step.
            output_type: ``"pil"``, ``"np"`` or ``"latent"``.
            latents: Optional initial noise ``[B, C, h, w]`` (overrides ``seed``).
            exact_size: Generate at exactly ``height`` x ``width`` (multiples of ``size_multiple``) instead
                of Ming's bucket; not allowed with ``image``.

        Raises:
            ImageInputError: Bad image bytes, or sizes that are zero, too large or not multiples of
                ``size_multiple`` (with ``exact_size``).
            ValueError: Bad condition shape, steps, output type, guidance scale or mode.
            GenerationCancelled: ``cancel`` fired.
        """
        t0 = time.perf_counter()
        # 1. Check inputs and pick the work size
        ref_img, (height, width) = self._check_inputs(condition, image, height, width, steps, output_type, exact_size)
        plan = plan_guidance(edit=ref_img is not None, s_txt=guidance_text, s_img=guidance_image, mode=guidance_mode)
        device = self.device
        # 2. Condition c (Ming's condition_embeds); batch B
        cond = self.bridge.condition(condition.to(device))  # [B, Q, D_llm]
        batch = cond.shape[0]
        # 3. Reference latents (editing)
        ref = None if ref_img is None else self.encode_image(ref_img).expand(batch, -1, -1, -1)
        # 4. Branch inputs: null = c * 0 before the MLP, MLP + pooling per branch
        branches = self.branch_inputs(plan, cond, ref)
        # 5. Initial noise
        latents = self.prepare_latents(batch, height, width, seed, latents)
        # 6. Timesteps (a private scheduler copy: calls may run concurrently)
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(steps, device=device, **self._shift_kwargs(scheduler, height, width))
        # 7. Denoising loop: all guidance branches in one DiT call per step
        for i, t in enumerate(scheduler.timesteps):
            if cancel is not None and is_cancelled(cancel):
                raise GenerationCancelled(f"cancelled before step {i + 1}/{steps}")
            _, v = self.velocities(latents, t, branches, plan)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            if callback is not None:
                callback(StepInfo(i + 1, steps, float(t), latents, time.perf_counter() - t0))
        # 8. Decode
        images = None if output_type == "latent" else self.decode_latents(latents)
        if output_type == "pil" and images is not None:
            images = [PIL.Image.fromarray(a) for a in images]
        return ImageOutput(images=images, latents=latents, height=height, width=width, seed=seed,
                           branches=plan.branches, seconds=time.perf_counter() - t0)

    def segment(self, condition: torch.Tensor, image: ImageLike, *, mask_filter: MaskFilter | None = None,
                **kwargs: Any) -> SegmentationOutput:
        """Segmentation as an edit (Ming's generative segmentation): run the edit (``condition`` should
        encode a ``segmentation_instruction``), difference output and the bucket-fitted input, filter,
        and map the mask back to the input's size.

        Args:
            condition: Query states for the segmentation instruction.
            image: The image to segment.
            mask_filter: Noise filtering for the difference mask.
            **kwargs: Passed to ``__call__`` (steps, seed, guidance, callback, cancel...).
        """
        src = load_image(image)
        out = self(condition, image=src, output_type="pil", **kwargs)
        edited = out.images[0]  # type: ignore[index]
        mask = recover_mask(fit_to_bucket(src), edited, mask_filter)
        full = mask_to_input(mask, src.height, src.width)
        return SegmentationOutput(mask=full, edited=edited,
                                  info={"seconds": out.seconds, "branches": out.branches, "bucket_mask": mask})

    # ------------------------------------------------------------------ pieces

    def branch_inputs(self, plan: GuidancePlan, cond: torch.Tensor, ref: torch.Tensor | None) -> BranchInputs:
        """Stack the plan's branches (``c`` or ``c * 0``; reference or zeros) and run the MLP + pooling on them.

        Args:
            plan: Guidance plan.
            cond: ``[B, Q, D_llm]`` condition from ``bridge.condition``.
            ref: ``[B, C, h, w]`` reference latents or None.
        """
        conds, refs = branch_inputs(plan, cond, ref)  # [K*B, Q, D], [K*B, C, h, w]
        hidden, pooled = self.bridge.project(conds)
        return BranchInputs(hidden.to(self.dtype), pooled.to(self.dtype), None if refs is None else refs.to(self.dtype))

    def velocities(self, latents: torch.Tensor, t: torch.Tensor, branches: BranchInputs, plan: GuidancePlan,
                   *, batched: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-branch velocities and the guided one for one step (the loop, tests and benchmarks use this).

        Args:
            latents: ``[B, C, h, w]``.
            t: Scalar timestep.
            branches: ``branch_inputs``' result for ``plan``.
            plan: Guidance plan.
            batched: One DiT call for all branches (True) or one call per branch (False).
        """
        k, b = len(plan.branches), latents.shape[0]
        x = latents.to(self.dtype)
        if batched:
            v = self.transformer(x.repeat(k, 1, 1, 1), branches.hidden, branches.pooled, t.reshape(1).expand(k * b),
                                 branches.refs)[0]
            preds = list(v.float().chunk(k))
        else:
            preds = []
            for j in range(k):
                sl = slice(j * b, (j + 1) * b)
                refs = None if branches.refs is None else branches.refs[sl]
                preds.append(self.transformer(x, branches.hidden[sl], branches.pooled[sl], t.reshape(1).expand(b),
                                              refs)[0].float())
        return preds, plan.combine(preds)

    def prepare_latents(self, batch: int, height: int, width: int, seed: int,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise ``[B, C, h, w]`` (float32) from a CPU generator seeded like Ming's
        ``torch.manual_seed(seed)``, so a seed gives the same image on every device."""
        c = self.transformer.config.in_channels
        shape = (batch, c, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
            return latents.to(self.device, torch.float32)
        gen = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(self.device)

    def encode_image(self, img: PIL.Image.Image) -> torch.Tensor:
        """RGB image -> VAE latents ``[1, C, h, w]`` as Ming: ``(mode - shift) * scale`` (deterministic)."""
        x = pil_to_tensor(img).to(self.device, self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode()
        cfg = self.vae.config
        return ((z - (cfg.shift_factor or 0.0)) * cfg.scaling_factor).to(self.dtype)

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Latents -> ``[B, H, W, 3]`` uint8."""
        cfg = self.vae.config
        z = latents.to(self.vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        return tensor_to_uint8(self.vae.decode(z, return_dict=False)[0])

    def _shift_kwargs(self, scheduler: Any, height: int, width: int) -> dict[str, float]:
        """Ming's pipeline passes ``mu`` (resolution-dependent shift) when the scheduler uses dynamic shifting."""
        c = scheduler.config
        if not c.get("use_dynamic_shifting", False):
            return {}
        seq = (height // self.vae_scale_factor // self.patch_size) * (width // self.vae_scale_factor // self.patch_size)
        base_seq, max_seq = c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096)
        base, top = c.get("base_shift", 0.5), c.get("max_shift", 1.16)
        m = (top - base) / (max_seq - base_seq)
        return {"mu": seq * m + (base - m * base_seq)}

    def _check_inputs(self, condition: torch.Tensor, image: ImageLike | None, height: int | None,
                      width: int | None, steps: int, output_type: str, exact_size: bool
                      ) -> tuple[PIL.Image.Image | None, tuple[int, int]]:
        q, d = self.bridge.num_query_tokens, self.config.llm_hidden_size
        if condition.ndim != 3 or tuple(condition.shape[1:]) != (q, d):
            raise ValueError(f"condition must be [B, {q}, {d}] (the 16x16 query states), got {tuple(condition.shape)}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if output_type not in ("pil", "np", "latent"):
            raise ValueError(f"output_type must be pil, np or latent, got {output_type!r}")
        m, top = self.size_multiple, self.max_side
        if image is None:
            height = 512 if height is None else height
            width = 512 if width is None else width
            if exact_size:
                check_size(height, width, multiple=m, max_side=top)
            else:
                check_size(height, width, multiple=1, max_side=2**16)
                height, width = aspect_bucket(height, width)[0]
            return None, (height, width)
        if height is not None or width is not None or exact_size:
            raise ImageInputError("an edit works at Ming's aspect bucket of the input image; do not pass a size")
        img = fit_to_bucket(load_image(image))
        check_size(img.height, img.width, multiple=m, max_side=top)
        return img, (img.height, img.width)

    # ------------------------------------------------------------------ build / save / load

    @classmethod
    def from_config(cls, config: DiffusionConfig, *, seed: int = 0, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> OmniImagePipeline:
        """Build with random weights (seeded) from a config; ``device="meta"`` allocates nothing."""
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

        torch.manual_seed(seed)
        with torch.device(device):
            dit = MingSD3Transformer2DModel(**vars(config.dit))
            bridge = ImageGenBridge(config, pooled_dim=config.dit.pooled_projection_dim,
                                    joint_dim=config.dit.joint_attention_dim)
            vae = AutoencoderKL(**config.vae.to_kwargs())
        scheduler = FlowMatchEulerDiscreteScheduler(shift=config.scheduler_shift)
        pipe = cls(bridge, dit, vae, scheduler, config)
        if str(device) != "meta":
            pipe.to(dtype=dtype)
        for m in (bridge, dit, vae):
            m.eval()
        return pipe

    @classmethod
    def from_preset(cls, name: str = "tiny", *, seed: int = 0, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> OmniImagePipeline:
        """Random-weight pipeline of a named preset (``tiny`` or ``ming-lite-omni-1.5``)."""
        return cls.from_config(DiffusionConfig.preset(name), seed=seed, device=device, dtype=dtype)

    def save_pretrained(self, path: str | Path) -> None:
        """Write Ming's layout: ``mlp/model.safetensors``, ``connector/``, ``transformer/``, ``vae/``, ``scheduler/``."""
        from safetensors.torch import save_file

        root = Path(path)
        (root / "mlp").mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.bridge.own_state_dict().items()}
        save_file(tensors, str(root / "mlp" / "model.safetensors"))
        self.bridge.connector.save_pretrained(str(root / "connector"))
        self.transformer.save_pretrained(str(root / "transformer"))
        self.vae.save_pretrained(str(root / "vae"))
        self.scheduler.save_pretrained(str(root / "scheduler"))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> OmniImagePipeline:
        """Load Ming's image-generation layout exactly as its ``load_image_gen_modules`` reads it.

        Every tensor of ``mlp/model.safetensors``, ``connector/``, ``transformer/`` and ``vae/`` must
        match the modules one to one (``generation.loading``); ``load_report`` counts them.

        Raises:
            CheckpointError: A subfolder or weight file is missing, or tensors are missing/unexpected/resized.
        """
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

        from generation import loading

        root = Path(path)
        subs = {s: loading.require_folder(root, s) for s in ("mlp", "connector", "transformer", "vae", "scheduler")}
        state = loading.read_safetensors(subs["mlp"])
        connector, n_conn = loading.load_connector(subs["connector"], dtype=dtype)
        dit, n_dit = loading.load_diffusers_model(MingSD3Transformer2DModel, subs["transformer"], dtype=dtype)
        vae, n_vae = loading.load_diffusers_model(AutoencoderKL, subs["vae"], dtype=dtype)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(subs["scheduler"]))
        config = _config_from_loaded(state, subs["mlp"], connector, dit, vae, scheduler)
        bridge = ImageGenBridge(config, connector=connector, pooled_dim=dit.config.pooled_projection_dim,
                                joint_dim=dit.config.joint_attention_dim)
        own = bridge.own_state_dict()
        loading.check_keys(set(own), set(state), str(subs["mlp"] / "model.safetensors"))
        try:
            bridge.load_state_dict(state, strict=False)  # keys checked above; the connector loaded apart
        except RuntimeError as e:
            raise loading.CheckpointError(f"{subs['mlp'] / 'model.safetensors'}: {' '.join(str(e).split())}") from None
        pipe = cls(bridge.to(dtype), dit, vae, scheduler, config)
        pipe.load_report = {"mlp": len(state), "connector": n_conn, "transformer": n_dit, "vae": n_vae,
                            "loaded": len(state) + n_conn + n_dit + n_vae,
                            "expected": len(own) + len(connector.state_dict()) + len(dit.state_dict())
                            + len(vae.state_dict())}
        pipe.to(device=device)
        for m in (bridge, dit, vae):
            m.eval()
        return pipe


def _config_from_loaded(state: dict[str, torch.Tensor], mlp_dir: Path, connector: Any, dit: Any, vae: Any,
                        scheduler: Any) -> DiffusionConfig:
    """Widths from the tensors (Ming reads no MLP config) and the sub-folders' configs."""
    from generation.config import ConnectorConfig, DiTConfig, VAEConfig
    from generation.loading import CheckpointError

    for key in ("proj_in.weight", "mlp.fc1.weight"):
        if key not in state:
            raise CheckpointError(f"{mlp_dir / 'model.safetensors'} has no {key}")
    c = connector.config
    conn = ConnectorConfig(hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                           num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
                           intermediate_size=c.intermediate_size, rms_norm_eps=c.rms_norm_eps,
                           vocab_size=c.vocab_size)
    dit_cfg = DiTConfig(**{k: dit.config[k] for k in vars(DiTConfig())})
    v = vae.config
    vae_cfg = VAEConfig(latent_channels=v.latent_channels, block_out_channels=tuple(v.block_out_channels),
                        layers_per_block=v.layers_per_block, norm_num_groups=v.norm_num_groups,
                        scaling_factor=v.scaling_factor, shift_factor=v.shift_factor or 0.0)
    return DiffusionConfig(llm_hidden_size=int(state["proj_in.weight"].shape[1]),
                           mlp_hidden_size=int(state["mlp.fc1.weight"].shape[0]), connector=conn, dit=dit_cfg,
                           vae=vae_cfg, scheduler_shift=float(scheduler.config.shift))


def is_cancelled(cancel: CancelLike) -> bool:
    """True when ``cancel`` (an object with ``is_set()`` or a zero-argument callable) says stop."""
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set()) if callable(is_set) else bool(cancel())  # type: ignore[operator]
