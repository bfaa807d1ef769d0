"""``OmniImagePipeline``: text-to-image, editing and segmentation conditioned on the thinker.

Shaped like a diffusers pipeline: components are injected, ``__call__`` is a short list of numbered
steps, results come back as a dataclass and progress goes through a callback. The components:

- ``bridge``: query-state adapter (``proj_in`` -> connector -> ``proj_out`` -> L2 -> MLP), ``mlp/`` + ``connector/``;
- ``transformer``: ``EditableSD3Transformer`` around diffusers' ``SD3Transformer2DModel``, ``transformer/``;
- ``vae``: diffusers ``AutoencoderKL``, ``vae/``;
- ``scheduler``: diffusers ``FlowMatchEulerDiscreteScheduler``, ``scheduler/``.

Legend: B batch, K guidance branches, Q query tokens, C latent channels, h/w latent size.
"""

from __future__ import annotations

import copy
import json
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
    check_size,
    load_image,
    pil_to_tensor,
    snap_size,
    tensor_to_uint8,
)
from generation.segmentation import MaskFilter, recover_mask
from generation.transformer import EditableSD3Transformer

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
        height: Output height in pixels (an edit returns the input's size).
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
    """``HxW`` bool mask at the input image's size."""
    edited: PIL.Image.Image
    info: dict[str, Any] = field(default_factory=dict)


class OmniImagePipeline:
    """Diffusion decoder conditioned on the thinker's query-token states.

    Args:
        bridge: Query-state adapter producing the DiT's text stream and pooled vector.
        transformer: The MMDiT (with reference-token support for editing).
        vae: ``AutoencoderKL``.
        scheduler: ``FlowMatchEulerDiscreteScheduler`` (copied per call; the template is never mutated).
        config: The decoder config (for saving); derived from the components when None.
    """

    def __init__(self, bridge: ImageGenBridge, transformer: EditableSD3Transformer, vae: nn.Module,
                 scheduler: Any, config: DiffusionConfig | None = None):
        self.bridge = bridge
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.config = config or bridge.config
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.patch_size = transformer.config.patch_size

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
    ) -> ImageOutput:
        """Generate (``image=None``) or edit ``image``, conditioned on ``condition``.

        Args:
            condition: ``[B, Q, D_llm]`` last hidden states of the thinker's 16x16 query tokens.
            image: Reference image for editing (PIL, ``HxWx3`` uint8 array, encoded bytes or a path).
            height: Output height; defaults to 512 for generation. For an edit the output always has
                the input's size (the work size is the input snapped to ``size_multiple``).
            width: Output width (see ``height``).
            steps: Denoising steps.
            seed: Seed of the initial noise (same seed, same inputs -> same image).
            guidance_text: Text guidance scale ``s_txt``.
            guidance_image: Image guidance scale ``s_img`` (editing only).
            guidance_mode: Guidance mode (see ``generation.guidance``); 1 = Ming's default.
            callback: Called with a ``StepInfo`` after every step.
            cancel: A ``threading.Event``/``asyncio.Event`` or a callable; checked before every step.
            output_type: ``"pil"``, ``"np"`` or ``"latent"``.
            latents: Optional initial noise ``[B, C, h, w]`` (overrides ``seed``).

        Raises:
            ImageInputError: Bad image bytes, or sizes that are zero, too large or not multiples of
                ``size_multiple``.
            GenerationCancelled: ``cancel`` fired.
        """
        t0 = time.perf_counter()
        # 1. Check inputs and pick the work size
        ref_img, (height, width), out_size = self._check_inputs(condition, image, height, width, steps, output_type)
        device = self.device
        # 2. Condition -> DiT text stream + pooled vector
        cond, pooled = self.bridge(condition.to(device))  # [B, Q, J], [B, P]
        cond, pooled = cond.to(self.dtype), pooled.to(self.dtype)
        batch = cond.shape[0]
        # 3. Reference latents (editing)
        ref = None
        if ref_img is not None:
            ref = self.encode_image(ref_img.resize((width, height), PIL.Image.BICUBIC)).expand(batch, -1, -1, -1)
        plan = plan_guidance(edit=ref is not None, s_txt=guidance_text, s_img=guidance_image, mode=guidance_mode)
        conds, pools, refs = branch_inputs(plan, cond, pooled, ref)  # [K*B, ...]
        # 4. Initial noise
        latents = self.prepare_latents(batch, height, width, seed, latents)
        # 5. Timesteps (a private scheduler copy: calls may run concurrently)
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(steps, device=device)
        # 6. Denoising loop: all guidance branches in one DiT call per step
        k = len(plan.branches)
        for i, t in enumerate(scheduler.timesteps):
            if cancel is not None and is_cancelled(cancel):
                raise GenerationCancelled(f"cancelled before step {i + 1}/{steps}")
            x = latents.to(self.dtype).repeat(k, 1, 1, 1)  # [K*B, C, h, w]
            v = self.transformer(x, t.expand(k * batch), conds, pools, refs).float()  # [K*B, C, h, w]
            v = plan.combine(v.chunk(k))  # [B, C, h, w]
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            if callback is not None:
                callback(StepInfo(i + 1, steps, float(t), latents, time.perf_counter() - t0))
        # 7. Decode
        images = None if output_type == "latent" else self.decode_latents(latents, out_size)
        if output_type == "pil" and images is not None:
            images = [PIL.Image.fromarray(a) for a in images]
        return ImageOutput(images=images, latents=latents, height=out_size[0], width=out_size[1], seed=seed,
                           branches=plan.branches, seconds=time.perf_counter() - t0)

    def segment(self, condition: torch.Tensor, image: ImageLike, *, mask_filter: MaskFilter | None = None,
                **kwargs: Any) -> SegmentationOutput:
        """Segmentation as an edit: run the edit (``condition`` should encode a
        ``segmentation_instruction``), then recover the mask by differencing output and input.

        Args:
            condition: Query states for the segmentation instruction.
            image: The image to segment.
            mask_filter: Noise filtering for the difference mask.
            **kwargs: Passed to ``__call__`` (steps, seed, guidance, callback, cancel...).
        """
        src = load_image(image)
        out = self(condition, image=src, output_type="pil", **kwargs)
        edited = out.images[0]  # type: ignore[index]
        mask = recover_mask(src, edited, mask_filter)
        return SegmentationOutput(mask=mask, edited=edited, info={"seconds": out.seconds, "branches": out.branches})

    # ------------------------------------------------------------------ pieces

    def velocities(self, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, pooled: torch.Tensor,
                   ref: torch.Tensor | None, plan: GuidancePlan, *, batched: bool = True
                   ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-branch velocities and the guided one for one step (tests and the benchmark use this).

        Args:
            latents: ``[B, C, h, w]``.
            t: Scalar timestep.
            cond: ``[B, Q, J]`` DiT text stream (after the bridge).
            pooled: ``[B, P]``.
            ref: Reference latents ``[B, C, h, w]`` or None.
            plan: Guidance plan.
            batched: One DiT call for all branches (True) or one call per branch (False).
        """
        k, b = len(plan.branches), latents.shape[0]
        conds, pools, refs = branch_inputs(plan, cond, pooled, ref)
        x = latents.to(self.dtype)
        if batched:
            v = self.transformer(x.repeat(k, 1, 1, 1), t.reshape(1).expand(k * b), conds, pools, refs)
            preds = list(v.float().chunk(k))
        else:
            preds = []
            for j in range(k):
                sl = slice(j * b, (j + 1) * b)
                preds.append(self.transformer(x, t.reshape(1).expand(b), conds[sl], pools[sl],
                                              None if refs is None else refs[sl]).float())
        return preds, plan.combine(preds)

    def prepare_latents(self, batch: int, height: int, width: int, seed: int,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise ``[B, C, h, w]`` (float32), drawn on the CPU so a seed gives the same image everywhere."""
        c = self.transformer.config.in_channels
        shape = (batch, c, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
            return latents.to(self.device, torch.float32)
        gen = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(self.device)

    def encode_image(self, img: PIL.Image.Image) -> torch.Tensor:
        """RGB image -> scaled VAE latents ``[1, C, h, w]`` (distribution mode, deterministic)."""
        x = pil_to_tensor(img).to(self.device, self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode()
        cfg = self.vae.config
        return ((z - (cfg.shift_factor or 0.0)) * cfg.scaling_factor).to(self.dtype)

    def decode_latents(self, latents: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Latents -> ``[B, H, W, 3]`` uint8, resized to ``size`` (h, w) when the work size differs."""
        cfg = self.vae.config
        z = latents.to(self.vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        arr = tensor_to_uint8(self.vae.decode(z, return_dict=False)[0])
        if arr.shape[1:3] != size:
            arr = np.stack([np.asarray(PIL.Image.fromarray(a).resize((size[1], size[0]), PIL.Image.BICUBIC))
                            for a in arr])
        return arr

    def _check_inputs(self, condition: torch.Tensor, image: ImageLike | None, height: int | None,
                      width: int | None, steps: int, output_type: str
                      ) -> tuple[PIL.Image.Image | None, tuple[int, int], tuple[int, int]]:
        q, d = self.bridge.num_query_tokens, self.config.llm_hidden_size
        if condition.ndim != 3 or tuple(condition.shape[1:]) != (q, d):
            raise ValueError(f"condition must be [B, {q}, {d}] (the 16x16 query states), got {tuple(condition.shape)}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if output_type not in ("pil", "np", "latent"):
            raise ValueError(f"output_type must be pil, np or latent, got {output_type!r}")
        m, top = self.size_multiple, self.max_side
        if image is None:
            height = 512 if height is None else height
            width = 512 if width is None else width
            check_size(height, width, multiple=m, max_side=top)
            return None, (height, width), (height, width)
        img = load_image(image)
        if height is not None or width is not None:
            raise ImageInputError("an edit keeps the input image's size; do not pass height/width")
        work = snap_size(img.height, img.width, multiple=m, max_side=top)
        return img, work, (img.height, img.width)

    # ------------------------------------------------------------------ build / save / load

    @classmethod
    def from_config(cls, config: DiffusionConfig, *, seed: int = 0, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> OmniImagePipeline:
        """Build with random weights (seeded) from a config; ``device="meta"`` allocates nothing."""
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

        torch.manual_seed(seed)
        with torch.device(device):
            dit = SD3Transformer2DModel(**vars(config.dit))
            bridge = ImageGenBridge(config, pooled_dim=config.dit.pooled_projection_dim,
                                    joint_dim=config.dit.joint_attention_dim)
            vae = AutoencoderKL(**config.vae.to_kwargs())
            transformer = EditableSD3Transformer(dit)
            with torch.no_grad():  # a small random reference marker so edit and generation differ
                transformer.ref_embed.normal_(0.0, 0.02)
        scheduler = FlowMatchEulerDiscreteScheduler(shift=config.scheduler_shift)
        pipe = cls(bridge, transformer, vae, scheduler, config)
        if str(device) != "meta":
            pipe.to(dtype=dtype)
        for m in (bridge, transformer, vae):
            m.eval()
        return pipe

    @classmethod
    def from_preset(cls, name: str = "tiny", *, seed: int = 0, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> OmniImagePipeline:
        """Random-weight pipeline of a named preset (``tiny`` or ``ming-lite-omni-1.5``)."""
        return cls.from_config(DiffusionConfig.preset(name), seed=seed, device=device, dtype=dtype)

    def save_pretrained(self, path: str | Path) -> None:
        """Write Ming's layout: ``mlp/``, ``connector/``, ``transformer/``, ``vae/``, ``scheduler/``."""
        from safetensors.torch import save_file

        root = Path(path)
        (root / "mlp").mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.bridge.own_state_dict().items()}
        tensors["ref_embed"] = self.transformer.ref_embed.detach().contiguous().cpu()
        save_file(tensors, str(root / "mlp" / "model.safetensors"))
        (root / "mlp" / "config.json").write_text(json.dumps(self.config.mlp_json(), indent=2) + "\n")
        self.bridge.connector.save_pretrained(str(root / "connector"))
        self.transformer.transformer.save_pretrained(str(root / "transformer"))
        self.vae.save_pretrained(str(root / "vae"))
        self.scheduler.save_pretrained(str(root / "scheduler"))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> OmniImagePipeline:
        """Load a checkpoint folder in Ming's layout (``save_pretrained``'s output or Ming's release).

        Raises:
            FileNotFoundError: A required subfolder is missing.
        """
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        root = Path(path)
        for sub in ("mlp", "connector", "transformer", "vae", "scheduler"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"{root} has no {sub}/ folder (expected Ming's image-generation layout)")
        mlp_cfg = json.loads((root / "mlp" / "config.json").read_text())
        state = load_file(str(root / "mlp" / "model.safetensors"))
        connector = AutoModelForCausalLM.from_pretrained(str(root / "connector"), dtype=dtype)
        dit = SD3Transformer2DModel.from_pretrained(str(root / "transformer"), dtype=dtype)
        vae = AutoencoderKL.from_pretrained(str(root / "vae"), dtype=dtype)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(root / "scheduler"))
        config = _config_from_loaded(mlp_cfg, state, connector, dit, vae, scheduler)
        bridge = ImageGenBridge(config, connector=connector, pooled_dim=dit.config.pooled_projection_dim,
                                joint_dim=dit.config.joint_attention_dim)
        missing = {k for k in bridge.own_state_dict() if k not in state}
        if missing:
            raise ValueError(f"{root / 'mlp' / 'model.safetensors'} lacks {sorted(missing)[:5]}")
        extra = sorted(k for k in state if k != "ref_embed" and k not in bridge.own_state_dict())
        if extra:  # e.g. proj_directvlm.* of later Ming releases: a conditioning path we do not run
            log.warning("ignoring %d tensors in mlp/model.safetensors: %s", len(extra), extra[:5])
        bridge.load_state_dict({k: v for k, v in state.items() if k != "ref_embed" and k not in extra},
                               strict=False)
        transformer = EditableSD3Transformer(dit, ref_embed=state.get("ref_embed"))  # absent in Ming: zeros
        pipe = cls(bridge.to(dtype), transformer.to(dtype), vae, scheduler, config)
        pipe.to(device=device)
        for m in (bridge, transformer, vae):
            m.eval()
        return pipe


def _config_from_loaded(mlp_cfg: dict[str, Any], state: dict[str, torch.Tensor], connector: Any, dit: Any,
                        vae: Any, scheduler: Any) -> DiffusionConfig:
    from generation.config import ConnectorConfig, DiTConfig, VAEConfig

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
    mlp_cfg = dict(mlp_cfg)
    mlp_cfg.setdefault("llm_hidden_size", state["proj_in.weight"].shape[1])
    mlp_cfg.setdefault("mlp_hidden_size", state["mlp.fc1.weight"].shape[0] if "mlp.fc1.weight" in state else 2048)
    mlp_cfg.setdefault("diffusion_c_input_dim", state["proj_out.weight"].shape[0])
    return DiffusionConfig.from_parts(mlp_cfg, connector=conn, dit=dit_cfg, vae=vae_cfg,
                                      scheduler_shift=float(scheduler.config.shift))


def is_cancelled(cancel: CancelLike) -> bool:
    """True when ``cancel`` (an object with ``is_set()`` or a zero-argument callable) says stop."""
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set()) if callable(is_set) else bool(cancel())  # type: ignore[operator]
