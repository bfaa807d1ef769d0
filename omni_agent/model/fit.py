"""Does a model fit on its device? Checked before any weight storage is allocated.

The weights' size comes from the parameter counts and the dtype (the real ``ming-lite-omni-1.5``
thinker: 18.2B parameters, 33.9 GiB in bf16); a working reserve (activations, KV cache, CUDA
workspace) comes on top. The device's free memory is CUDA's ``mem_get_info`` on a GPU and
``MemAvailable`` from ``/proc/meminfo`` on the CPU. A model that does not fit is refused with a
message that says how much it needs and how much there is, instead of failing halfway through an
allocation (or swapping the host to a halt).
"""

from __future__ import annotations

import os

import torch
from torch import nn

GIB = 2**30
RESERVE_BYTES = {"cuda": 4 * GIB, "cpu": 1 * GIB}
"""Working memory kept free beyond the weights, per device type."""


class DoesNotFitError(MemoryError):
    """A model that the device cannot hold, with the sizes in the message."""


def module_bytes(module: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of ``module``'s parameters and buffers (works on ``meta``); floats counted at ``dtype`` if given."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        size = dtype.itemsize if (dtype is not None and t.is_floating_point()) else t.element_size()
        total += t.numel() * size
    return total


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes, or None where it cannot be known (meta, other backends)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def check_fits(what: str, need_bytes: int, device: str | torch.device, *, reserve_bytes: int | None = None,
               available: int | None = None) -> None:
    """Refuse ``what`` (``need_bytes`` of weights) when ``device`` lacks room for it plus the reserve.

    ``available`` overrides the measured free memory (tests). Devices whose free memory cannot be
    known (``meta``) are not checked.

    Raises:
        DoesNotFitError: weights + reserve exceed the free memory.
    """
    device = torch.device(device)
    free = available if available is not None else available_bytes(device)
    if free is None:
        return
    reserve = reserve_bytes if reserve_bytes is not None else RESERVE_BYTES.get(device.type, 0)
    if need_bytes + reserve > free:
        raise DoesNotFitError(
            f"{what} needs {need_bytes / GIB:.1f} GiB of weights + {reserve / GIB:.1f} GiB working memory, "
            f"but {device} has {free / GIB:.1f} GiB free; use a smaller preset or dtype, or a larger device")
