"""Environment check: the installed native parts are the locked ones and they load.

``scripts/setup.sh`` runs ``python -m omni_agent.doctor`` after installing from ``requirements.lock``
so that a broken install fails the set-up with one line, instead of failing 90 tests later (a
torchaudio whose ``libtorchaudio.so`` does not match torch only shows up when a kernel is called).
``omni-agent doctor`` runs the same checks for a user.

Each check returns ``None`` when it passes or a one-line reason when it does not.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

LOCK_FILE = Path(__file__).resolve().parent.parent / "requirements.lock"
PAIRED = ("torch", "torchaudio")  # torchaudio's native library is built against one exact torch


def locked_versions(lock: Path = LOCK_FILE) -> dict[str, str]:
    """``{name: version}`` for every ``name==version`` line of a pip-compatible lock."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _public(version: str) -> str:
    return version.split("+", 1)[0]  # a local tag such as +cu130 names the build, not the release


def check_locked_pair(installed: Callable[[str], str] = metadata.version, lock: Path = LOCK_FILE) -> str | None:
    """torch and torchaudio in the environment are exactly the locked pair."""
    if not lock.exists():
        return None  # installed from a wheel, not a checkout: there is no lock to compare with
    pins = locked_versions(lock)
    for name in PAIRED:
        try:
            have = _public(installed(name))
        except metadata.PackageNotFoundError:
            return f"{name} is not installed (run `make setup`)"
        want = pins.get(name)
        if want is None:
            return f"{lock.name} pins no {name}"
        if have != want:
            return f"{name} {have} is installed but {lock.name} pins {want} (run `make setup`)"
    return None


def check_torchaudio_kernels() -> str | None:
    """torchaudio's native library loads against this torch and a kernel runs."""
    import torch
    import torchaudio._extension as ext
    import torchaudio.functional as F

    if not ext._IS_TORCHAUDIO_EXT_AVAILABLE:
        return "torchaudio's native library did not load against this torch (torch/torchaudio mismatch)"
    y = F.lfilter(torch.ones(1, 8), torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.0]))
    return None if y.shape == (1, 8) else "torchaudio.functional.lfilter returned a wrong shape"


def check_av() -> str | None:
    """PyAV's bundled FFmpeg encodes and decodes a frame."""
    import io

    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as inp:
        frames = list(inp.decode(video=0))
    return None if len(frames) == 1 else f"PyAV decoded {len(frames)} frames instead of 1"


def check_xgrammar() -> str | None:
    """xgrammar's compiled matcher builds a JSON-schema grammar."""
    import xgrammar

    info = xgrammar.TokenizerInfo(["a", "{", "}", '"'])
    compiled = xgrammar.GrammarCompiler(info).compile_json_schema('{"type": "object"}')
    xgrammar.GrammarMatcher(compiled)
    return None


def check_silero() -> str | None:
    """The Silero VAD model shipped in its package loads and scores one 32 ms window."""
    import torch
    from silero_vad import load_silero_vad

    model = load_silero_vad()
    with torch.no_grad():
        p = float(model(torch.zeros(512), 16000))
    return None if 0.0 <= p <= 1.0 else f"Silero VAD returned {p}"


CHECKS: dict[str, Callable[[], str | None]] = {
    "torch/torchaudio pair": check_locked_pair,
    "torchaudio kernels": check_torchaudio_kernels,
    "av": check_av,
    "xgrammar": check_xgrammar,
    "silero-vad": check_silero,
}


def run_checks() -> list[str]:
    """Run every check; return one line per failure (empty when all pass)."""
    failures = []
    for name, check in CHECKS.items():
        try:
            reason = check()
        except Exception as e:  # an import or load error is exactly what this reports
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        if reason:
            failures.append(f"{name}: {reason}")
    return failures


def main() -> int:
    failures = run_checks()
    for line in failures:
        print(f"omni-agent doctor: {line}", file=sys.stderr)
    if not failures:
        print(f"omni-agent doctor: {len(CHECKS)} native checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
