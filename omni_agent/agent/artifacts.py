"""Artifacts (generated images, masks, screenshots) stored by id and served over HTTP.

The graph state keeps only references (``{"id", "mime", "url"}``); bytes live here, on disk when a
root folder is given (so they survive restarts like the checkpoints) and in memory otherwise.
``GET /v1/artifacts/{id}`` serves them (:func:`artifacts_router`) behind the server's API-key check,
and only to the principal that made them: each artifact records the principal of the request it was
made in (:func:`omni_agent.principal.current_principal`) as its ``owner``; anyone else gets the same
404 as for an id that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from omni_agent.agent.tools import ArtifactRef
from omni_agent.principal import current_principal, owns

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
        owner = current_principal()
        if owner is not None:
            meta["owner"] = owner
        if self.root is None:
            with self._lock:
                self._mem[artifact_id] = (data, mime, meta)
        else:
            (self.root / (artifact_id + _EXT.get(mime, ".bin"))).write_bytes(data)
            (self.root / (artifact_id + ".meta.json")).write_text(json.dumps({"mime": mime, **meta}))
        return ArtifactRef(id=artifact_id, mime=mime, kind=kind,
                           meta={k: v for k, v in meta.items() if k not in ("kind", "owner")})

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
        if got is None or not owns(got[2].get("owner"), current_principal()):
            raise KeyError(f"unknown artifact {artifact_id!r}")
        return Image.open(io.BytesIO(got[0])).convert("RGB")


def artifacts_router(store: ArtifactStore, settings: Any) -> Any:
    """FastAPI router serving ``GET /v1/artifacts/{artifact_id}`` to the principal that owns it.

    Args:
        store: the artifact store.
        settings: the runtime ``Settings`` (API keys); the route authenticates like every ``/v1`` route.
    """
    from fastapi import APIRouter, Depends, HTTPException
    from fastapi.responses import Response

    from omni_agent.server.auth import auth_dependency

    router = APIRouter(dependencies=[Depends(auth_dependency(settings))])

    @router.get("/v1/artifacts/{artifact_id}")
    async def get_artifact(artifact_id: str) -> Response:
        principal = current_principal()
        got = await asyncio.to_thread(store.get, artifact_id)  # a disk read: off the event loop
        if got is None or not owns(got[2].get("owner"), principal):
            raise HTTPException(status_code=404, detail=f"no artifact {artifact_id}")
        data, mime, _meta = got
        return Response(content=data, media_type=mime, headers={"Cache-Control": "private, max-age=86400"})

    return router
