"""The memory check refuses a preset/dtype that does not fit the device, before allocating anything."""

from __future__ import annotations

import pytest
import torch

from omni_agent.model import fit
from omni_agent.model.fit import GIB, DoesNotFitError, check_fits, module_bytes
from omni_agent.model.thinker import Thinker, param_counts


def test_real_preset_size_from_parameter_counts() -> None:
    meta = Thinker.from_preset("ming-lite-omni-1.5", device="meta", dtype=torch.bfloat16)
    total = param_counts(meta)["total"]
    need = module_bytes(meta)
    assert 0 <= need - 2 * total < 64 * 2**20  # bf16 parameters + Whisper's positional table
    assert 33 * GIB < need < 35 * GIB
    assert module_bytes(meta, torch.float32) == 2 * need
    with pytest.raises(DoesNotFitError, match=r"needs 33\.\d GiB of weights \+ 4\.0 GiB working memory, but "
                                              r"cuda:0 has 24\.0 GiB free"):
        check_fits("ming-lite-omni-1.5", need, "cuda:0", available=24 * GIB)
    check_fits("ming-lite-omni-1.5", need, "cuda:0", available=139 * GIB)  # an H200 holds it
    check_fits("anything", 10**15, "meta")  # nothing to check on meta


def test_building_refuses_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fit, "available_bytes", lambda device: 2 * GIB)
    with pytest.raises(DoesNotFitError, match="the ming-lite-omni-1.5 thinker in bfloat16 needs"):
        Thinker.from_preset("ming-lite-omni-1.5", device="cpu", dtype=torch.bfloat16)
    Thinker.from_preset("tiny", device="cpu")  # ~10 MB: fits in the 1 GiB it leaves after the reserve


def test_loading_refuses_before_reading(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    Thinker.from_preset("tiny").save_pretrained(tmp_path)
    monkeypatch.setattr(fit, "available_bytes", lambda device: GIB)  # all of it is the CPU reserve
    with pytest.raises(DoesNotFitError, match=f"the thinker in {tmp_path} needs"):
        Thinker.from_pretrained(tmp_path)
    monkeypatch.setattr(fit, "available_bytes", lambda device: 8 * GIB)
    assert Thinker.from_pretrained(tmp_path).config.name == "tiny"


def test_available_memory_is_measured_on_cpu() -> None:
    free = fit.available_bytes(torch.device("cpu"))
    assert free is not None and free > 0
    assert fit.available_bytes(torch.device("meta")) is None
