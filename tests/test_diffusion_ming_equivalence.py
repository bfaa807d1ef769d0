"""Equivalence with Ming-Lite-Omni 1.5's own image head (fixtures made by its code on tiny random configs).

``tests/fixtures/ming_imagegen/`` comes from ``scripts/fixtures/make_ming_imagegen_fixtures.py`` (Ming's
``load_image_gen_modules`` + ``generate(image_gen=True)``, 2 steps, in a side environment). Here the
release-layout folder it wrote is loaded with OUR code and every recorded stage compared (<= 1e-4 fp32).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from generation.guidance import plan_guidance
from generation.images import aspect_bucket, fit_to_bucket
from generation.loading import CheckpointError
from generation.pipeline import OmniImagePipeline

FIX = Path(__file__).parent / "fixtures" / "ming_imagegen"
ATOL = 1e-4


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= ATOL, f"max abs difference {err:.3g} > {ATOL}"


@pytest.fixture(scope="module")
def pipe():
    return OmniImagePipeline.from_pretrained(FIX / "release")


def _fix(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIX / f"{name}.safetensors"))


def test_release_layout_loads_every_tensor(pipe):
    rep = pipe.load_report
    assert rep["loaded"] == rep["expected"] == 340
    assert rep["transformer"] == 126  # 59 of them Ming's refiners / reference embedding
    names = set(pipe.transformer.state_dict())
    assert sum(k.startswith(("noise_refiner.", "ref_image_refiner.", "ref_pos_embed.")) for k in names) == 59
    assert not (FIX / "release" / "mlp" / "config.json").exists()  # Ming reads none


@pytest.mark.parametrize("sub", ["mlp", "connector", "transformer", "vae", "scheduler"])
def test_missing_subfolder_is_a_one_line_error(tmp_path, sub):
    shutil.copytree(FIX / "release", tmp_path / "r")
    shutil.rmtree(tmp_path / "r" / sub)
    with pytest.raises(CheckpointError) as e:
        OmniImagePipeline.from_pretrained(tmp_path / "r")
    assert f"no {sub}/ folder" in str(e.value) and "\n" not in str(e.value)


def test_extra_or_missing_tensors_are_named(tmp_path):
    from safetensors.torch import save_file

    shutil.copytree(FIX / "release", tmp_path / "r")
    path = tmp_path / "r" / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    del state["noise_refiner.1.ff.net.2.bias"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"1 missing: noise_refiner\.1\.ff\.net\.2\.bias; 1 unexpected: extra"):
        OmniImagePipeline.from_pretrained(tmp_path / "r")
    mlp = tmp_path / "r" / "mlp" / "model.safetensors"
    state = load_file(str(mlp))
    state["proj_directvlm.weight"] = torch.zeros(2)
    save_file(state, str(mlp))
    shutil.copy(FIX / "release" / "transformer" / "diffusion_pytorch_model.safetensors", path)
    with pytest.raises(CheckpointError, match="unexpected: proj_directvlm.weight"):
        OmniImagePipeline.from_pretrained(tmp_path / "r")


@pytest.mark.parametrize("name", ["t2i", "edit_imgcfg1"])
def test_condition_stream_and_pooled_cond_and_null(pipe, name):
    f = _fix(name)
    with torch.inference_mode():
        cond = pipe.bridge.condition(f["query_states"])
        _close(cond, f["condition"])
        br = pipe.branch_inputs(plan_guidance(edit=False, s_txt=5.0), cond, None)  # (uncond, full)
    _close(br.hidden[:1], f["mlp_null"])  # null = c * 0 BEFORE the MLP: mlp(0), not zeros
    _close(br.hidden[1:], f["mlp_cond"])
    _close(br.pooled[:1], f["pooled_null"])
    _close(br.pooled[1:], f["pooled_cond"])
    assert f["mlp_null"].abs().max() > 0.1


@pytest.mark.parametrize("name,s_img", [("t2i", 1.0), ("edit_imgcfg1", 1.0), ("edit_mode1", 1.5)])
def test_one_dit_step_all_branches(pipe, name, s_img):
    f = _fix(name)
    cond_fix = _fix("edit_imgcfg1") if name == "edit_mode1" else f
    edit = name != "t2i"
    # Ming runs all four branches when s_img > 1: compare them all (mode 1 plus "text")
    plan = plan_guidance(edit=edit, s_txt=5.0, s_img=s_img)
    if s_img > 1:
        plan = type(plan)(("uncond", "image", "text", "full"), 1, 5.0, s_img, True)
    with torch.inference_mode():
        cond = pipe.bridge.condition(cond_fix["query_states"])
        ref = f["ref_latents"] if edit else None
        br = pipe.branch_inputs(plan, cond, ref)
        preds, _ = pipe.velocities(f["noise"], f["timesteps"][0], br, plan)
    _close(torch.cat(preds), f["dit_out"])


@pytest.mark.parametrize("mode", [1, 2, 3, 4, 5, 6])
def test_guidance_modes_combination(pipe, mode):
    f, c = _fix(f"edit_mode{mode}"), _fix("edit_imgcfg1")
    plan = plan_guidance(edit=True, s_txt=4.0, s_img=1.5, mode=mode)
    with torch.inference_mode():
        br = pipe.branch_inputs(plan, pipe.bridge.condition(c["query_states"]), c["ref_latents"])
        _, v = pipe.velocities(c["noise"], f["timesteps"][0], br, plan)
    _close(v, f["v0"])


def test_image_branch_only_above_one():
    assert plan_guidance(edit=True, s_txt=4.0, s_img=1.0, mode=3).branches == ("image", "full")
    assert plan_guidance(edit=True, s_txt=4.0, s_img=0.5, mode=1).branches == ("image", "full")
    assert plan_guidance(edit=True, s_txt=4.0, s_img=1.01, mode=1).branches == ("uncond", "image", "full")
    with pytest.raises(ValueError, match="cfg_mode"):
        plan_guidance(edit=True, s_txt=4.0, s_img=1.5, mode=0)
    with pytest.raises(ValueError, match=">= 1"):
        plan_guidance(edit=False, s_txt=0.5)


def test_text_to_image_two_full_steps(pipe):
    f = _fix("t2i")
    out = pipe(f["query_states"], height=400, width=600, steps=2, seed=7, guidance_text=5.0, output_type="np")
    assert (out.height, out.width) == (416, 608)  # Ming's bucket for 400x600
    _close(out.latents, f["latents_final"])
    assert np.abs(out.images[0][:64, :64].astype(np.int16) - f["image_crop"].numpy().astype(np.int16)).max() <= 1


@pytest.mark.parametrize("name,s_img,mode", [("edit_imgcfg1", 1.0, 1), ("edit_mode1", 1.5, 1)])
def test_edit_two_full_steps_from_the_source_image(pipe, name, s_img, mode):
    f, c = _fix(name), _fix("edit_imgcfg1")
    src = PIL.Image.open(FIX / "edit_source.png")
    with torch.inference_mode():
        _close(pipe.encode_image(fit_to_bucket(src)), c["ref_latents"])  # Ming's resize + crop + VAE
    out = pipe(c["query_states"], image=src, steps=2, seed=7, guidance_text=4.0, guidance_image=s_img,
               guidance_mode=mode, output_type="latent")
    _close(out.latents, f["latents_final"])


def test_aspect_buckets_match_ming_process_ratio():
    for row in json.loads((FIX / "buckets.json").read_text()):
        bucket, resize = aspect_bucket(row["h"], row["w"])
        assert list(bucket) == row["bucket"] and list(resize) == row["resize"], row
