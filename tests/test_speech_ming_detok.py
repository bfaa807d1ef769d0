"""Ming's detokenizer against fixtures made with Ming's own code (scripts/fixtures/make_ming_detok_fixtures.py).

The release layout (yaml + flow_stream.pt + hift_v2.pt) is rebuilt from the committed tensor names and
shapes of Ming's modules (keys.json) and the numpy-seeded weights the fixture script used.
"""

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from audio.codec import CodecError, load_codec
from audio.codec.ming import TINY_YAML, MingDetokenizer, seeded_state_dict
from audio.codec.ming_config import parse_detok_yaml
from audio.codec.ming_stream import VoicePrompt

FIX = Path(__file__).parent / "fixtures" / "ming_detok"
TOL = 1e-4  # fp32, against Ming's own modules


@pytest.fixture(scope="module")
def ming_keys():
    return json.loads((FIX / "keys.json").read_text())


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "outputs.npz"))


def write_release(folder: Path, keys: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(TINY_YAML, folder / "audio_detokenizer_stream.yaml")
    torch.save({"model": seeded_state_dict({k: tuple(v) for k, v in keys["flow"].items()}, 0)},
               folder / "flow_stream.pt")
    torch.save(seeded_state_dict({k: tuple(v) for k, v in keys["hift"].items()}, 1), folder / "hift_v2.pt")
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory, ming_keys):
    return write_release(tmp_path_factory.mktemp("ckpt") / "talker", ming_keys)


@pytest.fixture(scope="module")
def det(release):
    return MingDetokenizer.from_pretrained(release.parent)  # a checkpoint root: finds talker/


@pytest.fixture(scope="module")
def voice(det, ref):
    return det.make_voice(ref["prompt_tokens"], ref["prompt_mel"], ref["embedding"])


def test_release_tensor_names_equal_mings(ming_keys):
    flow, hift = MingDetokenizer.expected_shapes(parse_detok_yaml(TINY_YAML))
    for ours, theirs in ((flow, ming_keys["flow"]), (hift, ming_keys["hift"])):
        assert sorted(set(theirs) - set(ours)) == []  # missing
        assert sorted(set(ours) - set(theirs)) == []  # unexpected
        assert all(tuple(theirs[k]) == ours[k] for k in ours)
    assert (len(flow), len(hift)) == (230, 328)


def test_real_sizes_have_mings_tensor_counts():
    flow, hift = MingDetokenizer.expected_shapes(parse_detok_yaml(Path(TINY_YAML).with_name("ming_detok_stream.yaml")))
    assert (len(flow), len(hift)) == (1121, 328)


def test_load_counts(det):
    assert det.tensors_loaded == det.tensors_expected == 558
    assert det.sample_rate == 24000


def test_flow_offline_mel_equals_ming(det, ref):
    t = {k: torch.from_numpy(v) for k, v in ref.items()}
    mel = det.flow.inference(t["tokens"], t["prompt_tokens"], t["prompt_mel"], t["embedding"],
                             streaming=False, finalize=True)
    assert mel.shape == (1, 80, 150)
    assert (mel - t["mel_offline"]).abs().max().item() <= TOL


def test_flow_streaming_chunk_equals_ming(det, ref):
    t = {k: torch.from_numpy(v) for k, v in ref.items()}
    mel = det.flow.inference(t["tokens"][:, :83], t["prompt_tokens"], t["prompt_mel"], t["embedding"],
                             streaming=True, finalize=False)
    assert mel.shape == (1, 80, 80)  # the 3 lookahead tokens are context only
    assert (mel - t["mel_stream83"]).abs().max().item() <= TOL


def test_hift_waveform_equals_ming(det, ref):
    wave, source = det.hift.inference(torch.from_numpy(ref["mel_offline"]), None, torch.Generator().manual_seed(7))
    assert wave.shape == ref["hift_wave"].shape == (1, 150 * 480)
    assert np.abs(wave.numpy() - ref["hift_wave"]).max() <= TOL
    assert np.abs(source.numpy() - ref["hift_source"]).max() <= TOL
    assert 0.005 < float(np.abs(ref["hift_wave"]).max()) < 0.99  # not silent, not clipped


def test_offline_synthesis_equals_ming(det, ref, voice):
    wave = det.synthesize(ref["tokens"][0], voice, seed=11)
    assert np.abs(wave - ref["tts_offline"][0]).max() <= TOL


@pytest.mark.parametrize("piece", [7, 150])
def test_streaming_equals_ming(det, ref, voice, piece):
    st = det.stream(voice, seed=11)
    tokens = ref["tokens"][0]
    chunks = [st.push(tokens[i:i + piece]) for i in range(0, len(tokens), piece)] + [st.finish()]
    if piece == 7:  # chunk by chunk as Ming yields them
        assert [len(c) for c in chunks if len(c)] == ref["stream_lengths"].tolist()
    out = np.concatenate(chunks)
    assert np.abs(out - ref["stream_chunks"]).max() <= TOL


def test_cancel_between_chunks(det, ref, voice):
    st = det.stream(voice, seed=11)
    tokens = ref["tokens"][0]
    first = st.push(tokens[:90])
    assert len(first) == ref["stream_lengths"][0]
    ev = threading.Event()
    ev.set()
    assert st.push(tokens[90:], cancel=ev).size == 0 and st.pending > 0
    st.cancel()
    assert st.finish().size == 0
    again = np.concatenate([st.push(tokens), st.finish()])  # finish() reset the session
    assert np.abs(again - ref["stream_chunks"]).max() <= TOL


def test_codec_interface(release, ref, voice):
    codec = load_codec("ming", path=release)
    codec.set_voice(ref["prompt_tokens"][0], ref["prompt_mel"][0], ref["embedding"][0])
    with codec.streaming() as dec:
        out = np.concatenate([dec.push(ref["tokens"][0]), dec.flush()])
    st = codec.stream(voice, seed=0)  # the same voice passed as tensors: the same audio
    assert np.array_equal(out, np.concatenate([st.push(ref["tokens"][0]), st.finish()]))
    assert len(out) == 150 * 480 and codec.samples_per_code == 480
    with pytest.raises(CodecError, match="decodes only"):
        codec.encode(np.zeros(1000, np.float32))
    with pytest.raises(CodecError, match=r"\[0, 4096\)"):
        codec.stream_decoder().push([4096])


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_and_corrupted_files(tmp_path, ming_keys):
    rel = write_release(tmp_path / "talker", ming_keys)
    (rel / "hift_v2.pt").unlink()
    with pytest.raises(CodecError) as e:
        MingDetokenizer.from_pretrained(tmp_path)
    assert "hift_v2.pt: missing" in _one_line(e)
    (rel / "hift_v2.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CodecError) as e:
        MingDetokenizer.from_pretrained(rel)
    assert "hift_v2.pt: not a readable torch checkpoint" in _one_line(e)
    (rel / "audio_detokenizer_stream.yaml").write_text("flow: [unclosed")
    with pytest.raises(CodecError) as e:
        MingDetokenizer.from_pretrained(rel)
    assert "audio_detokenizer_stream.yaml" in _one_line(e)


def test_missing_unexpected_and_misshaped_tensors(tmp_path, ming_keys):
    rel = write_release(tmp_path / "talker", ming_keys)
    flow = torch.load(rel / "flow_stream.pt")["model"]
    flow.pop("encoder.after_norm.weight")
    flow["encoder.extra.weight"] = torch.zeros(2)
    flow["input_embedding.weight"] = torch.zeros(10, 512)
    torch.save({"model": flow}, rel / "flow_stream.pt")
    with pytest.raises(CodecError) as e:
        MingDetokenizer.from_pretrained(rel)
    msg = _one_line(e)
    for part in ("flow_stream.pt", "1 missing: encoder.after_norm.weight", "1 unexpected: encoder.extra.weight",
                 "input_embedding.weight (10, 512) != (4096, 512)"):
        assert part in msg
    torch.save(flow, rel / "flow_stream.pt")
    with pytest.raises(CodecError, match="under 'model'"):
        MingDetokenizer.from_pretrained(rel)


def test_older_weight_norm_names_and_generator_prefix_load(tmp_path, ming_keys, ref):
    rel = write_release(tmp_path / "talker", ming_keys)
    hift = torch.load(rel / "hift_v2.pt")
    renamed = {"generator." + k.replace(".parametrizations.weight.original0", ".weight_g")
               .replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in hift.items()}
    torch.save(renamed, rel / "hift_v2.pt")
    det = MingDetokenizer.from_pretrained(rel)
    wave, _ = det.hift.inference(torch.from_numpy(ref["mel_offline"]), None, torch.Generator().manual_seed(7))
    assert np.abs(wave.numpy() - ref["hift_wave"]).max() <= TOL


def test_yaml_refuses_what_is_not_implemented(tmp_path):
    text = TINY_YAML.read_text()
    for old, new, match in (("use_cnn_module: False", "use_cnn_module: True", "use_cnn_module"),
                            ("flow.flow.CausalMaskedDiffWithXvec", "flow.flow.MaskedDiffWithXvec", "implemented"),
                            ("sampling_rate: !ref <sample_rate>", "sampling_rate: 22050", "sampling_rate"),
                            ("!ref <chunk_size> * <token_mel_ratio>", "!ref <nope>", "nope")):
        p = tmp_path / "d.yaml"
        p.write_text(text.replace(old, new))
        with pytest.raises(CodecError, match=match):
            parse_detok_yaml(p)
    cfg = parse_detok_yaml(TINY_YAML)
    assert cfg.flow.estimator.static_chunk_size == 50 and cfg.flow.encoder.up_stride == 1
    assert cfg.flow.inference_cfg_rate == 0.7 and cfg.hift.upsample_rates == (8, 5, 3)


def test_voice_prompt_validation():
    with pytest.raises(CodecError, match="frames for"):
        VoicePrompt.from_tensors(np.zeros(10, int), np.zeros((9, 80)), np.zeros(192))
    with pytest.raises(CodecError, match="192"):
        VoicePrompt.from_tensors(np.zeros(10, int), np.zeros((10, 80)), np.zeros(80))
    with pytest.raises(CodecError, match="prompt tokens"):
        VoicePrompt.from_tensors(np.full(10, 5000), np.zeros((10, 80)), np.zeros(192))
    v = VoicePrompt.from_tensors(np.zeros((1, 10), int), np.zeros((1, 10, 80)), np.zeros((1, 192)))
    assert v.tokens.shape == (1, 10) and v.mel.shape == (1, 10, 80)


def test_bench_ming_keys_quick():
    from omni_agent.bench.ming_detok import ming_figures

    result = ming_figures(quick=True)
    assert result["ming_tensors_loaded"] == result["ming_tensors_expected"] == 558
    assert result["ming_detok_rtf"] > 0 and result["ming_first_chunk_ms"] > 0
    assert result["ming_detok_size"] == "tiny" and result["ming_sample_rate"] == 24000
