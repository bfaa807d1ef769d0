"""Artifacts (generated images, masks, screenshots) stored by id and served over HTTP.

The graph state keeps only references (``{"id", "mime", "url"}``); bytes live here, on disk when a
root folder is given (so they survive restarts like the checkpoints) and in memory otherwise.
``GET /v1/artifacts/{id}`` serves them (:func:`artifacts_router`).
"""

from __future__ import annotations

import io
import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from omni_agent.agent.tools import ArtifactRef

_ID = re.compile(r"^art_[0-9a-f]{24}$")  # ids name files: never let a request pick a path
_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "application/json": ".json",
        "audio/wav": ".wav"}


class ArtifactStore:
    """Id -> (bytes, mime, meta).

    Args:
        root: Folder to keep artifacts in; None keeps them in memory (lost on restart).
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        self._mem: dict[str, tuple[bytes, str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def valid_id(artifact_id: str) -> bool:
        return bool(_ID.match(artifact_id))

    def put(self, data: bytes, mime: str, *, kind: str = "image", meta: dict[str, Any] | None = None) -> ArtifactRef:
        artifact_id = "art_" + uuid.uuid4().hex[:24]
        meta = {"kind": kind, **(meta or {})}
        if self.root is None:
            with self._lock:
                self._mem[artifact_id] = (data, mime, meta)
        else:
            (self.root / (artifact_id + _EXT.get(mime, ".bin"))).write_bytes(data)
            (self.root / (artifact_id + ".meta.json")).write_text(json.dumps({"mime": mime, **meta}))
        return ArtifactRef(id=artifact_id, mime=mime, kind=kind, meta={k: v for k, v in meta.items() if k != "kind"})

    def put_image(self, image: Any, *, kind: str = "image", meta: dict[str, Any] | None = None) -> ArtifactRef:
        """Store a PIL image (or HxWx3 uint8 array) as PNG."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(image)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        meta = {"width": image.width, "height": image.height, **(meta or {})}
        return self.put(buf.getvalue(), "image/png", kind=kind, meta=meta)

    def get(self, artifact_id: str) -> tuple[bytes, str, dict[str, Any]] | None:
        if not self.valid_id(artifact_id):
            return None
        if self.root is None:
            return self._mem.get(artifact_id)
        meta_path = self.root / (artifact_id + ".meta.json")
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        mime = meta.pop("mime")
        return (self.root / (artifact_id + _EXT.get(mime, ".bin"))).read_bytes(), mime, meta

    def load_image(self, artifact_id: str) -> Any:
        """The artifact as a PIL image (RGB); ``KeyError`` when unknown."""
        from PIL import Image

        got = self.get(artifact_id)
        if got is None:
            raise KeyError(f"unknown artifact {artifact_id!r}")
        return Image.open(io.BytesIO(got[0])).convert("RGB")


def artifacts_router(store: ArtifactStore) -> Any:
    """FastAPI router serving ``GET /v1/artifacts/{artifact_id}``."""
    from fastapi import APIRouter, HTTPException
    from fastapi.responses import Response

    router = APIRouter()

    @router.get("/v1/artifacts/{artifact_id}")
    def get_artifact(artifact_id: str) -> Response:
        got = store.get(artifact_id)
        if got is None:
            raise HTTPException(status_code=404, detail=f"no artifact {artifact_id}")
        data, mime, _meta = got
        return Response(content=data, media_type=mime, headers={"Cache-Control": "private, max-age=86400"})

    return router
