"""Conditioning on the thinker: query-token layout, positions, and the states that are taken."""

import dataclasses
from types import SimpleNamespace

import torch

from generation.conditioning import IMAGE, TEXT, ThinkerConditioner, query_layout
from generation.config import DiffusionConfig
from generation.pipeline import OmniImagePipeline


def test_query_layout_follows_ming():
    lay = query_layout((4, 8, 16), start=10)
    assert len(lay.is_query) == (16 + 2) + (64 + 2) + (256 + 2)
    assert int(lay.is_query.sum()) == 16 + 64 + 256
    assert not lay.is_query[0] and lay.is_query[1] and not lay.is_query[17]
    pos = lay.position_ids
    assert pos[:, 0].tolist() == [10, 10, 10]  # <image> numbered like text
    assert pos[:, 1].tolist() == [11, 11, 11]  # first 4x4 query: t = h = offset, w = offset + col
    assert pos[:, 16].tolist() == [11, 11, 26]  # last 4x4 query (col 15)
    assert pos[:, 17].tolist() == [27, 27, 27]  # </image>: max id so far + 1
    assert lay.modality_ids[1] == IMAGE and lay.modality_ids[0] == TEXT
    assert lay.last_scale.stop - lay.last_scale.start == 256
    assert bool(lay.is_query[lay.last_scale].all())


class _Tok:
    def token_to_id(self, s):
        return {"<image>": 7, "</image>": 8}.get(s)


class _StubThinker:
    """Hidden state = input embedding + position row t: lets the test see which slots were taken."""

    hidden_size = 128

    def embed(self, pp):
        return torch.zeros(len(pp.input_ids), self.hidden_size)

    def embed_tokens(self, ids):
        return torch.full((len(ids), self.hidden_size), -1.0)

    def forward(self, x, pos, mod):
        self.seen = (x, pos, mod)
        return SimpleNamespace(hidden=x + pos[0, :, :, None].float())


def test_conditioner_appends_queries_and_takes_the_16x16_states():
    cfg = dataclasses.replace(DiffusionConfig.preset("tiny"), llm_hidden_size=128)
    pipe = OmniImagePipeline.from_config(cfg)
    t = 5
    pp = SimpleNamespace(input_ids=torch.arange(t), position_ids=torch.arange(t).expand(3, t),
                         modality_ids=torch.zeros(t, dtype=torch.long))
    thinker = _StubThinker()

    class _Proc:
        tokenizer = _Tok()

        def __call__(self, msgs, add_generation_prompt):
            assert msgs[0]["content"][-1]["text"] == "draw a cat" and add_generation_prompt
            return pp

    cond = ThinkerConditioner(thinker, _Proc(), pipe.bridge)
    out = cond("draw a cat")
    x, pos, mod = thinker.seen
    assert x.shape == (1, t + 16 + 64 + 256 + 6, 128)
    q16 = pipe.bridge.query_tokens_dict["16x16"].detach()
    offset = int(pos[0, 0, -2])  # t row of the 16x16 queries
    assert out.shape == (1, 256, 128)
    assert torch.allclose(out[0], q16 + offset)
    assert int(mod.sum()) == 16 + 64 + 256


def test_real_thinker_conditioning():
    from omni_agent.model.processor import OmniProcessor
    from omni_agent.model.thinker import Thinker

    thinker = Thinker.from_preset("tiny")
    processor = OmniProcessor.for_preset("tiny")
    cfg = dataclasses.replace(DiffusionConfig.preset("tiny"), llm_hidden_size=thinker.hidden_size)
    pipe = OmniImagePipeline.from_config(cfg)
    cond = ThinkerConditioner(thinker, processor, pipe.bridge)
    a, b = cond("draw a cat"), cond("draw a dog")
    assert a.shape == (1, 256, thinker.hidden_size)
    assert not torch.allclose(a, b)
    out = pipe(a, height=32, width=32, steps=1, output_type="np", exact_size=True)
    assert out.images.shape == (1, 32, 32, 3)


def test_edit_images_reach_the_thinker_at_mings_generation_size():
    from omni_agent.model.processor import OmniProcessor
    from omni_agent.model.thinker import Thinker

    processor = OmniProcessor.for_preset("tiny")
    cfg = dataclasses.replace(DiffusionConfig.preset("tiny"), llm_hidden_size=Thinker.from_preset("tiny").hidden_size)
    cond = ThinkerConditioner(Thinker.from_preset("tiny"), processor, OmniImagePipeline.from_config(cfg).bridge)
    assert cond.gen_processor.min_pixels == cond.gen_processor.max_pixels == 451584
    assert (processor.min_pixels, processor.max_pixels) != (451584, 451584)  # the chat processor is untouched
