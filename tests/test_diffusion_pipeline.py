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
        hidden, pooled = pipe.bridge(cond)
    return latents, ref, hidden, pooled, torch.tensor(700.0)


def _call(pipe, x, t, hidden, pooled, ref):
    with torch.inference_mode():
        return pipe.transformer(x, t.reshape(1), hidden, pooled, ref)


@pytest.mark.parametrize("s_img", [1.0, 1.5])
def test_mode1_guided_velocity_equals_formula_from_separate_calls(pipe, cond, s_img):
    x, ref, hidden, pooled, t = _step_inputs(pipe, cond)
    s_txt = 5.0
    z_h, z_p, z_r = torch.zeros_like(hidden), torch.zeros_like(pooled), torch.zeros_like(ref)
    v_u = _call(pipe, x, t, z_h, z_p, z_r)
    v_img = _call(pipe, x, t, z_h, z_p, ref)
    v_full = _call(pipe, x, t, hidden, pooled, ref)
    expected = v_u + s_img * (v_img - v_u) + s_txt * (v_full - v_img)
    plan = plan_guidance(edit=True, s_txt=s_txt, s_img=s_img, mode=1)
    with torch.inference_mode():
        _, guided = pipe.velocities(x, t, hidden, pooled, ref, plan, batched=True)
    assert torch.allclose(guided, expected, atol=1e-4, rtol=1e-4)
    # the image branch (the third call) only when s_img != 1: at 1 the v_u terms cancel exactly
    assert plan.branches == (("image", "full") if s_img == 1.0 else ("uncond", "image", "full"))


def test_other_modes_and_text_to_image_formulas(pipe, cond):
    x, ref, hidden, pooled, t = _step_inputs(pipe, cond)
    z_h, z_p, z_r = torch.zeros_like(hidden), torch.zeros_like(pooled), torch.zeros_like(ref)
    v_u = _call(pipe, x, t, z_h, z_p, z_r)
    v_txt = _call(pipe, x, t, hidden, pooled, z_r)
    v_full = _call(pipe, x, t, hidden, pooled, ref)
    with torch.inference_mode():
        _, g2 = pipe.velocities(x, t, hidden, pooled, ref, plan_guidance(edit=True, s_txt=4.0, s_img=2.0, mode=2))
        _, g0 = pipe.velocities(x, t, hidden, pooled, ref, plan_guidance(edit=True, s_txt=4.0, s_img=2.0, mode=0))
        _, gt = pipe.velocities(x, t, hidden, pooled, None, plan_guidance(edit=False, s_txt=4.0, s_img=2.0))
    assert torch.allclose(g2, v_u + 4.0 * (v_txt - v_u) + 2.0 * (v_full - v_txt), atol=1e-4, rtol=1e-4)
    assert torch.allclose(g0, v_u + 4.0 * (v_full - v_u), atol=1e-4, rtol=1e-4)
    tu = _call(pipe, x, t, z_h, z_p, None)
    tf = _call(pipe, x, t, hidden, pooled, None)
    assert torch.allclose(gt, tu + 4.0 * (tf - tu), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("edit", [False, True])
def test_batched_branches_equal_sequential(pipe, cond, edit):
    x, ref, hidden, pooled, t = _step_inputs(pipe, cond)
    plan = plan_guidance(edit=edit, s_txt=5.0, s_img=1.5)
    with torch.inference_mode():
        pb, gb = pipe.velocities(x, t, hidden, pooled, ref if edit else None, plan, batched=True)
        ps, gs = pipe.velocities(x, t, hidden, pooled, ref if edit else None, plan, batched=False)
    assert len(pb) == len(plan.branches) == (3 if edit else 2)
    for a, b in zip(pb, ps, strict=True):
        assert torch.allclose(a, b, atol=ATOL, rtol=ATOL)
    assert torch.allclose(gb, gs, atol=10 * ATOL, rtol=ATOL)  # x s_txt amplifies the tiny differences


def test_branch_conditions_negative_is_zeros(pipe, cond):
    _, ref, hidden, pooled, _ = _step_inputs(pipe, cond)
    plan = plan_guidance(edit=True, s_txt=5.0, s_img=1.5)
    conds, pools, refs = branch_inputs(plan, hidden, pooled, ref)
    assert plan.branches == ("uncond", "image", "full")
    assert conds[0].abs().sum() == 0 and conds[1].abs().sum() == 0 and torch.equal(conds[2], hidden[0])
    assert pools[0].abs().sum() == 0 and torch.equal(pools[2], pooled[0])
    assert refs[0].abs().sum() == 0 and torch.equal(refs[1], ref[0]) and torch.equal(refs[2], ref[0])


def test_reference_tokens_change_the_prediction(pipe, cond):
    x, ref, hidden, pooled, t = _step_inputs(pipe, cond)
    plain = _call(pipe, x, t, hidden, pooled, None)
    with_ref = _call(pipe, x, t, hidden, pooled, ref)
    assert plain.shape == with_ref.shape == x.shape
    assert not torch.allclose(plain, with_ref)


def test_same_seed_same_image_and_different_seed_differs(pipe, cond):
    a = pipe(cond, height=32, width=48, steps=2, seed=7, output_type="np").images
    b = pipe(cond, height=32, width=48, steps=2, seed=7, output_type="np").images
    c = pipe(cond, height=32, width=48, steps=2, seed=8, output_type="np").images
    assert a.shape == (1, 32, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_edit_keeps_input_size(pipe, cond):
    img = _image(w=53, h=37)  # not multiples of 16: worked on at a snapped size, returned at 53x37
    out = pipe(cond, image=img, steps=2, guidance_image=1.5)
    assert out.images[0].size == (53, 37)
    assert out.branches == ("uncond", "image", "full")


def test_output_types_and_callback(pipe, cond):
    seen = []
    out = pipe(cond, height=32, width=32, steps=3, output_type="latent", callback=lambda s: seen.append(s.step))
    assert out.images is None and out.latents.shape == (1, pipe.config.dit.in_channels, 4, 4)
    assert seen == [1, 2, 3]
    pil = pipe(cond, height=32, width=32, steps=1).images
    assert isinstance(pil[0], PIL.Image.Image) and pil[0].size == (32, 32)


def test_cancellation_event_and_callable(pipe, cond):
    ev = threading.Event()
    steps = []

    def cb(info):
        steps.append(info.step)
        ev.set()

    with pytest.raises(GenerationCancelled):
        pipe(cond, height=32, width=32, steps=5, callback=cb, cancel=ev)
    assert steps == [1]
    with pytest.raises(GenerationCancelled):
        pipe(cond, height=32, width=32, steps=5, cancel=lambda: True)


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
        pipe(cond, height=pipe.max_side + 16, width=32, steps=1)
    with pytest.raises(ImageInputError, match="multiple of 16"):
        pipe(cond, height=40, width=32, steps=1)
    with pytest.raises(ValueError, match="condition must be"):
        pipe(cond[:, :10], height=32, width=32, steps=1)
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
    a = pipe(cond, height=32, width=32, steps=2, seed=3, output_type="np").images
    b = loaded(cond, height=32, width=32, steps=2, seed=3, output_type="np").images
    assert np.array_equal(a, b)
    for mod in ("bridge", "transformer", "vae"):
        sa, sb = getattr(pipe, mod).state_dict(), getattr(loaded, mod).state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert loaded.config.img_gen_scales == (4, 8, 16)


def test_missing_checkpoint_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="mlp/"):
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
    n = sum(x.numel() for x in p.transformer.transformer.parameters())
    assert 1.9e9 < n < 2.2e9  # SD3-medium MMDiT is about 2B parameters
    assert p.size_multiple == 16 and p.max_side == 192 * 16


def test_loads_ming_style_mlp_without_ref_embed(pipe, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    pipe.save_pretrained(tmp_path)
    f = tmp_path / "mlp" / "model.safetensors"
    state = load_file(str(f))
    del state["ref_embed"]  # Ming's release has no reference marker
    state["proj_directvlm.0.weight"] = torch.ones(4)  # a later Ming key we do not use
    save_file(state, str(f))
    loaded = OmniImagePipeline.from_pretrained(tmp_path)
    assert torch.count_nonzero(loaded.transformer.ref_embed) == 0
    assert "proj_directvlm" in caplog.text
