"""OpenAI's image endpoints on Ming's image head: ``POST /v1/images/generations`` and ``/v1/images/edits``.

The official SDK's ``client.images.generate(prompt=...)`` and ``client.images.edit(image=..., prompt=...)``
work unchanged. The request is conditioned on the engine's thinker (the 16x16 query tokens, as the
agent's image tools do) and run by ``generation.OmniImagePipeline`` in a worker thread, one request at
a time.

Fields: ``prompt``; ``image`` (edits: one file, multipart ``image`` or ``image[]``); ``n`` (1-10);
``size`` (``"WxH"`` or ``"auto"``; Ming snaps every size to its closest ~512^2 aspect bucket and an edit
works at the bucket of its input image -- the response's ``size`` says what was made);
``response_format`` ``b64_json`` or ``url`` (``url``: the PNG goes to the artifact store and the URL is
``/v1/artifacts/{id}`` on this server); ``model`` and ``user`` are accepted and not used (one image head).
Extensions: ``seed`` (default: random per request) and ``steps``. Everything else OpenAI defines
(``mask``, ``quality``, ``style``, ``background``, ``output_format`` other than png, ...) is refused with
a 400 naming it, never ignored.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omni_agent.server.auth import auth_dependency
from omni_agent.server.errors import APIError

UNSUPPORTED = ("mask", "quality", "style", "background", "moderation", "output_compression", "partial_images",
               "stream", "input_fidelity")
MAX_IMAGE_BYTES = 32 * 2**20


class ImageRequest(BaseModel):
    """The fields both endpoints take (OpenAI's names, plus ``seed``/``steps``)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=32000)
    model: str | None = None
    n: int = Field(1, ge=1, le=10)
    size: str = "auto"
    response_format: str = "url"
    output_format: str | None = None
    user: str | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    steps: int | None = Field(None, ge=1, le=200)


def images_router(settings: Any, engine: Any) -> APIRouter:
    """Router with both endpoints; the image head is built on the first request.

    The endpoints use the app responder's ``image_tools`` (the agent's instance) when it has one.

    Args:
        settings: Runtime settings (``model.path`` / ``model.preset``, ``server.api_key``).
        engine: The ``AsyncEngine`` (its thinker conditions the decoder).
    """
    router = APIRouter(prefix="/v1/images", dependencies=[Depends(auth_dependency(settings))])
    state: dict[str, Any] = {}

    def tools(request: Request) -> Any:
        responder = getattr(request.app.state, "responder", None)
        shared = getattr(responder, "image_tools", None)
        if shared is not None:
            return shared  # the agent's own ImageTools: one image decoder in memory, one lock for both
        if "tools" not in state:
            # Fallback: the app's responder has no image tools (a custom responder, or one built with
            # image_tools=False), so this router builds its own, lazily, on the same image head.
            from omni_agent.agent.image_tools import ImageTools

            artifacts = getattr(responder, "artifacts", None)
            state["tools"] = ImageTools.lazy(engine, artifacts, preset=settings.model.preset,
                                             path=settings.model.path, seed=settings.model.seed)
        return state["tools"]

    @router.post("/generations")
    async def generations(request: Request) -> dict[str, Any]:
        body = _parse(await _json(request))
        return await _run(tools(request), body, None, request)

    @router.post("/edits")
    async def edits(request: Request) -> dict[str, Any]:
        form = await request.form()
        files = [f for key in ("image", "image[]") for f in form.getlist(key)]
        fields = {k: v for k, v in form.multi_items() if k not in ("image", "image[]")}
        if len(files) != 1 or isinstance(files[0], str):
            raise APIError(400, f"edits take exactly one image file (got {len(files)}); Ming edits one reference "
                                "image", param="image")
        data = await files[0].read()
        if len(data) > MAX_IMAGE_BYTES:
            raise APIError(400, f"image is larger than {MAX_IMAGE_BYTES} bytes", param="image")
        return await _run(tools(request), _parse(fields), data, request)

    return router


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise APIError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    return body


def _parse(fields: dict[str, Any]) -> ImageRequest:
    for name in UNSUPPORTED:
        if fields.get(name) not in (None, "", "auto", False, "false"):
            raise APIError(400, f"'{name}' is not supported by this image head (Ming's generation/editing has no "
                                "such option)", param=name)
        fields.pop(name, None)
    try:
        req = ImageRequest.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise APIError(400, f"{err['msg']} ({param})", param=param) from None
    if req.response_format not in ("url", "b64_json"):
        raise APIError(400, f"response_format must be 'url' or 'b64_json', got {req.response_format!r}",
                       param="response_format")
    if req.output_format not in (None, "png"):
        raise APIError(400, f"output_format {req.output_format!r} is not supported (png only)", param="output_format")
    return req


def _size(size: str) -> tuple[int, int] | None:
    """``"WxH"`` -> ``(height, width)``; ``"auto"`` -> None."""
    if size == "auto":
        return None
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise APIError(400, f"size must be 'WIDTHxHEIGHT' or 'auto', got {size!r}", param="size") from None
    if not (1 <= w <= 8192 and 1 <= h <= 8192):
        raise APIError(400, f"size {size!r} out of range (1..8192 per side)", param="size")
    return h, w


async def _run(tools: Any, req: ImageRequest, image: bytes | None, request: Request) -> dict[str, Any]:
    from generation.images import ImageInputError, load_image
    from generation.loading import CheckpointError
    from generation.pipeline import GenerationCancelled

    size = _size(req.size)
    if image is not None and size is not None:
        raise APIError(400, "an edit works at Ming's aspect bucket of the input image; use size 'auto'", param="size")
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)

    def work() -> Any:
        src = None if image is None else load_image(image)
        with tools._lock:
            cond = tools.conditioner(req.prompt, src)
            kw: dict[str, Any] = dict(steps=req.steps or tools.steps, seed=seed, guidance_text=tools.guidance_text)
            if src is None:
                height, width = size or (512, 512)
                return tools.pipeline(cond.expand(req.n, -1, -1), height=height, width=width, **kw)
            return tools.pipeline(cond.expand(req.n, -1, -1), image=src, guidance_image=tools.guidance_image, **kw)

    try:
        out = await asyncio.to_thread(work)
    except ImageInputError as e:
        raise APIError(400, str(e), param="image" if image is not None else "size") from None
    except ValueError as e:
        raise APIError(400, str(e)) from None
    except CheckpointError as e:
        raise APIError(500, f"the image head did not load: {e}", type="server_error") from None
    except GenerationCancelled as e:
        raise APIError(500, str(e), type="server_error") from None
    if req.response_format == "url" and tools.artifacts is None:
        raise APIError(400, "response_format 'url' needs the artifact store; use 'b64_json'", param="response_format")

    def encode() -> list[dict[str, str]]:  # PNG encoding and the artifact write are CPU and disk work
        data = []
        for img in out.images:
            if req.response_format == "b64_json":
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                data.append({"b64_json": base64.b64encode(buf.getvalue()).decode("ascii")})
            else:
                ref = tools.artifacts.put_image(img, meta={"prompt": req.prompt, "seed": seed})
                data.append({"url": str(request.base_url).rstrip("/") + f"/v1/artifacts/{ref.id}"})
        return data

    data = await asyncio.to_thread(encode)  # the principal (a context variable) goes with it: artifacts owned
    return {"created": int(time.time()), "data": data, "size": f"{out.width}x{out.height}", "output_format": "png"}
