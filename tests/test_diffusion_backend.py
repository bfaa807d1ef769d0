"""Pluggable diffusers backend: a tiny random StableDiffusion3Pipeline built offline, run by class name."""

import json
import threading

import numpy as np
import pytest
import torch

from generation.backends import DiffusersBackend
from generation.images import ImageInputError
from generation.pipeline import GenerationCancelled


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    d = tmp_path_factory.mktemp("sd3")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":  # a character-level BPE vocabulary, no merges
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    clip = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=16,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)
    dit = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                pooled_projection_dim=32, out_channels=4, pos_embed_max_size=32)
    vae = AutoencoderKL(block_out_channels=(8, 8), latent_channels=4, norm_num_groups=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        shift_factor=0.0, scaling_factor=1.0, use_quant_conv=False, use_post_quant_conv=False)
    pipe = StableDiffusion3Pipeline(
        transformer=dit, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
        text_encoder=CLIPTextModelWithProjection(clip), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(clip), tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(str(d / "pipe"))
    return d / "pipe"


@pytest.fixture(scope="module")
def backend(sd3_dir):
    return DiffusersBackend.load("StableDiffusion3Pipeline", sd3_dir, text_encoder_3=None, tokenizer_3=None)


def test_runs_a_diffusers_pipeline_by_class_name(backend):
    steps = []
    out = backend.generate("a cat", height=32, width=32, steps=2, seed=0, output_type="np",
                           callback=lambda s: steps.append(s.step))
    assert out.images.shape == (1, 32, 32, 3) and out.images.dtype == np.uint8
    assert steps == [1, 2]
    again = backend.generate("a cat", height=32, width=32, steps=2, seed=0, output_type="np")
    assert np.array_equal(out.images, again.images)
    pil = backend.generate("a cat", height=32, width=48, steps=1).images[0]
    assert pil.size == (48, 32)


def test_cancel_and_bad_inputs(backend):
    ev = threading.Event()
    with pytest.raises(GenerationCancelled):
        backend.generate("a cat", height=32, width=32, steps=3, callback=lambda s: ev.set(), cancel=ev)
    with pytest.raises(ImageInputError, match="multiple of"):
        backend.generate("a cat", height=30, width=32, steps=1)
    with pytest.raises(ImageInputError, match="takes no input image"):
        backend.generate("a cat", image=np.zeros((32, 32, 3), np.uint8), steps=1)


def test_unknown_class_is_refused(sd3_dir):
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        DiffusersBackend.load("NoSuchPipeline", sd3_dir)
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        DiffusersBackend.load("AutoencoderKL", sd3_dir)
