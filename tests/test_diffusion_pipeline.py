"""Diffusion decoder: guidance maths, batching, seeds, sizes, bad inputs, checkpoints (tiny, CPU)."""

import io
import threading

import numpy as np
import PIL.Image
import pytest
import torch

from generation.guidance import branch_inputs, plan_guidance
from generation.images import ImageInputError
from generation.pipeline import GenerationCancelled, OmniImagePipeline

ATOL = 1e-5  # batched vs per-branch calls: same maths, float32 reduction order may differ slightly


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return OmniImagePipeline.from_preset("tiny", seed=0)


@pytest.fixture(scope="module")
def cond(pipe):
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, pipe.bridge.num_query_tokens, pipe.config.llm_hidden_size, generator=g)


def _image(w=48, h=32, seed=0):
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _step_inputs(pipe, cond, size=32):
    g = torch.Generator().manual_seed(2)
    c = pipe.config.dit.in_channels
    f = pipe.vae_scale_factor
    latents = torch.randn(1, c, size // f, size // f, generator=g)
    ref = torch.randn(1, c, size // f, size // f, generator=g)
    with torch.inference_mode():
        c = pipe.bridge.condition(cond)
    return latents, ref, c, torch.tensor(700.0)


def _call(pipe, x, t, c, ref):
    """One branch through the MLP and the DiT, unbatched."""
    with torch.inference_mode():
        hidden, pooled = pipe.bridge.project(c)
        return pipe.transformer(x, hidden, pooled, t.reshape(1), ref)[0]


@pytest.mark.parametrize("mode", [1, 2, 3, 4, 5, 6])
def test_guided_velocity_equals_mings_formula_from_separate_calls(pipe, cond, mode):
    x, ref, c, t = _step_inputs(pipe, cond)
    g, gi = 5.0, 1.5
    zero, z_r = c * 0.0, torch.zeros_like(ref)
    v_u, v_img = _call(pipe, x, t, zero, z_r), _call(pipe, x, t, zero, ref)
    v_txt, v_full = _call(pipe, x, t, c, z_r), _call(pipe, x, t, c, ref)
    expected = {1: v_u + gi * (v_img - v_u) + g * (v_full - v_img), 2: v_u + gi * (v_img - v_u),
                3: v_txt + gi * (v_full - v_txt), 4: v_u + g * (v_txt - v_u), 5: v_img + g * (v_full - v_img),
                6: v_u + g * (v_txt - v_u) + gi * (v_img - v_u)}[mode]
    plan = plan_guidance(edit=True, s_txt=g, s_img=gi, mode=mode)
    with torch.inference_mode():
        _, guided = pipe.velocities(x, t, pipe.branch_inputs(plan, c, ref), plan)
    assert torch.allclose(guided, expected, atol=1e-4, rtol=1e-4)


def test_without_image_guidance_and_text_to_image(pipe, cond):
    x, ref, c, t = _step_inputs(pipe, cond)
    zero = c * 0.0
    v_img, v_full = _call(pipe, x, t, zero, ref), _call(pipe, x, t, c, ref)
    for mode in (1, 4):  # s_img <= 1: Ming ignores the mode
        plan = plan_guidance(edit=True, s_txt=4.0, s_img=1.0, mode=mode)
        with torch.inference_mode():
            _, g = pipe.velocities(x, t, pipe.branch_inputs(plan, c, ref), plan)
        assert plan.branches == ("image", "full")
        assert torch.allclose(g, v_img + 4.0 * (v_full - v_img), atol=1e-4, rtol=1e-4)
    tu, tf = _call(pipe, x, t, zero, None), _call(pipe, x, t, c, None)
    plan = plan_guidance(edit=False, s_txt=4.0, s_img=2.0, mode=3)
    with torch.inference_mode():
        _, gt = pipe.velocities(x, t, pipe.branch_inputs(plan, c, None), plan)
    assert torch.allclose(gt, tu + 4.0 * (tf - tu), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("edit", [False, True])
def test_batched_branches_equal_sequential(pipe, cond, edit):
    x, ref, c, t = _step_inputs(pipe, cond)
    plan = plan_guidance(edit=edit, s_txt=5.0, s_img=1.5)
    with torch.inference_mode():
        br = pipe.branch_inputs(plan, c, ref if edit else None)
        pb, gb = pipe.velocities(x, t, br, plan, batched=True)
        ps, gs = pipe.velocities(x, t, br, plan, batched=False)
    assert len(pb) == len(plan.branches) == (3 if edit else 2)
    for a, b in zip(pb, ps, strict=True):
        assert torch.allclose(a, b, atol=ATOL, rtol=ATOL)
    assert torch.allclose(gb, gs, atol=10 * ATOL, rtol=ATOL)  # x s_txt amplifies the tiny differences


def test_null_condition_is_zero_before_the_mlp(pipe, cond):
    _, ref, c, _ = _step_inputs(pipe, cond)
    plan = plan_guidance(edit=True, s_txt=5.0, s_img=1.5)
    conds, refs = branch_inputs(plan, c, ref)
    assert plan.branches == ("uncond", "image", "full")
    assert conds[0].abs().sum() == 0 and conds[1].abs().sum() == 0 and torch.equal(conds[2], c[0])
    assert refs[0].abs().sum() == 0 and torch.equal(refs[1], ref[0]) and torch.equal(refs[2], ref[0])
    with torch.inference_mode():
        br = pipe.branch_inputs(plan, c, ref)
        null_hidden, null_pooled = pipe.bridge.project(torch.zeros_like(c))
    assert br.hidden[0].abs().sum() > 0  # mlp(0) is the MLP's biases through its LayerNorms, not zeros
    assert torch.equal(br.hidden[0], null_hidden[0]) and torch.equal(br.pooled[0], null_pooled[0])


def test_reference_tokens_change_the_prediction(pipe, cond):
    x, ref, c, t = _step_inputs(pipe, cond)
    plain = _call(pipe, x, t, c, None)
    with_ref = _call(pipe, x, t, c, ref)
    assert plain.shape == with_ref.shape == x.shape
    assert not torch.allclose(plain, with_ref)
    with pytest.raises(ValueError, match="must match"):
        _call(pipe, x, t, c, ref[..., :2])


def test_same_seed_same_image_and_different_seed_differs(pipe, cond):
    kw = dict(height=32, width=48, steps=2, output_type="np", exact_size=True)
    a = pipe(cond, seed=7, **kw).images
    b = pipe(cond, seed=7, **kw).images
    c = pipe(cond, seed=8, **kw).images
    assert a.shape == (1, 32, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sizes_follow_mings_buckets(pipe, cond):
    img = _image(w=53, h=37)  # h/w 0.698 -> Ming's bucket 0.68: 416x608 (resize to cover, centre crop)
    out = pipe(cond, image=img, steps=1, guidance_image=1.5, output_type="latent")
    assert (out.height, out.width) == (416, 608) and out.latents.shape[-2:] == (52, 76)
    assert out.branches == ("uncond", "image", "full")
    gen = pipe(cond, height=1024, width=1024, steps=1, output_type="latent")  # Ming snaps 1024^2 to 512^2
    assert (gen.height, gen.width) == (512, 512)
    with pytest.raises(ImageInputError, match="aspect bucket"):
        pipe(cond, image=img, height=64, width=64, steps=1)


def test_output_types_and_callback(pipe, cond):
    seen = []
    out = pipe(cond, height=32, width=32, steps=3, output_type="latent", callback=lambda s: seen.append(s.step),
               exact_size=True)
    assert out.images is None and out.latents.shape == (1, pipe.config.dit.in_channels, 4, 4)
    assert seen == [1, 2, 3]
    pil = pipe(cond, height=32, width=32, steps=1, exact_size=True).images
    assert isinstance(pil[0], PIL.Image.Image) and pil[0].size == (32, 32)


def test_cancellation_event_and_callable(pipe, cond):
    ev = threading.Event()
    steps = []

    def cb(info):
        steps.append(info.step)
        ev.set()

    with pytest.raises(GenerationCancelled):
        pipe(cond, height=32, width=32, steps=5, callback=cb, cancel=ev, exact_size=True)
    assert steps == [1]
    with pytest.raises(GenerationCancelled):
        pipe(cond, height=32, width=32, steps=5, cancel=lambda: True, exact_size=True)


def test_bad_inputs_give_clear_errors(pipe, cond, monkeypatch):
    with pytest.raises(ImageInputError, match="not an image"):
        pipe(cond, image=b"this is not a png", steps=1)
    with pytest.raises(ImageInputError, match="empty"):
        pipe(cond, image=b"", steps=1)
    with pytest.raises(ImageInputError, match="zero-size"):
        pipe(cond, image=PIL.Image.new("RGB", (0, 16)), steps=1)
    with pytest.raises(ImageInputError, match="positive"):
        pipe(cond, height=0, width=32, steps=1)
    with pytest.raises(ImageInputError, match="exceeds"):
        pipe(cond, height=pipe.max_side + 16, width=32, steps=1, exact_size=True)
    with pytest.raises(ImageInputError, match="multiple of 16"):
        pipe(cond, height=40, width=32, steps=1, exact_size=True)
    with pytest.raises(ValueError, match="condition must be"):
        pipe(cond[:, :10], height=32, width=32, steps=1)
    with pytest.raises(ValueError, match="cfg_mode"):
        pipe(cond, steps=1, guidance_mode=7)
    # an oversize image file is refused before it is decoded
    buf = io.BytesIO()
    PIL.Image.new("RGB", (64, 64)).save(buf, format="PNG")
    monkeypatch.setattr("generation.images.MAX_INPUT_PIXELS", 1000)
    with pytest.raises(ImageInputError, match="more than 1000 pixels"):
        pipe(cond, image=buf.getvalue(), steps=1)


def test_checkpoint_round_trip(pipe, cond, tmp_path):
    pipe.save_pretrained(tmp_path)
    for sub in ("mlp", "connector", "transformer", "vae", "scheduler"):
        assert (tmp_path / sub).is_dir()
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "mlp" / "model.safetensors")))
    assert {"query_tokens_dict.4x4", "query_tokens_dict.8x8", "query_tokens_dict.16x16",
            "proj_in.weight", "proj_out.weight", "mlp.fc1.weight", "mlp.fc2.weight"} <= keys
    loaded = OmniImagePipeline.from_pretrained(tmp_path)
    assert not (tmp_path / "mlp" / "config.json").exists()
    assert loaded.load_report["loaded"] == loaded.load_report["expected"]
    kw = dict(height=32, width=32, steps=2, seed=3, output_type="np", exact_size=True)
    a, b = pipe(cond, **kw).images, loaded(cond, **kw).images
    assert np.array_equal(a, b)
    for mod in ("bridge", "transformer", "vae"):
        sa, sb = getattr(pipe, mod).state_dict(), getattr(loaded, mod).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert loaded.config.img_gen_scales == (4, 8, 16)


def test_missing_checkpoint_folder_is_reported(tmp_path):
    from generation.loading import CheckpointError

    with pytest.raises(CheckpointError, match="no mlp/ folder"):
        OmniImagePipeline.from_pretrained(tmp_path)


def test_connector_attention_is_bidirectional(pipe, cond):
    with torch.inference_mode():
        a, _ = pipe.bridge(cond)
        changed = cond.clone()
        changed[:, -1] += 1.0  # only the last query state changes
        b, _ = pipe.bridge(changed)
    assert not torch.allclose(a[:, 0], b[:, 0])  # the first token saw the last one


def test_bridge_shapes_norm_and_pooling(pipe, cond):
    with torch.inference_mode():
        hidden, pooled = pipe.bridge(cond)
    cfg = pipe.config
    assert hidden.shape == (1, 256, cfg.dit.joint_attention_dim)
    assert pooled.shape == (1, cfg.dit.pooled_projection_dim)
    mean = hidden.mean(dim=1, keepdim=True)
    expected = torch.nn.functional.adaptive_avg_pool1d(mean, cfg.dit.pooled_projection_dim).squeeze(1)
    assert torch.allclose(pooled, expected, atol=1e-6)
    assert sum(p.numel() for p in pipe.bridge.query_embeds()) == (16 + 64 + 256) * cfg.llm_hidden_size


def test_real_preset_builds_on_meta():
    p = OmniImagePipeline.from_preset("ming-lite-omni-1.5", device="meta")
    n = sum(x.numel() for x in p.transformer.parameters())
    assert 2.0e9 < n < 2.3e9  # SD3-medium MMDiT (about 2B) plus Ming's four refiner blocks
    assert p.size_multiple == 16 and p.max_side == 192 * 16
