"""One settings object for the whole runtime.

Precedence, highest first: command-line flags, environment (``OMNI_AGENT_*``, nested fields joined
by a double underscore: ``OMNI_AGENT_SERVER__PORT=9000``), a TOML file (``--config`` or
``OMNI_AGENT_CONFIG``), then the defaults below. Everything is validated once, here, at the edge.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "OMNI_AGENT_"
ENV_NESTING = "__"


class SettingsError(ValueError):
    """A configuration problem, phrased for a one-line CLI error."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    preset: Literal["tiny", "ming-lite-omni-1.5"] = "tiny"
    """Architecture preset used when no checkpoint path is given."""
    path: str | None = None
    """Checkpoint folder in Ming's layout (config.json + safetensors); overrides the preset."""
    device: str = "cpu"
    """Torch device: ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight and activation dtype."""
    seed: int = 0
    """Seed for the random weights of presets without a checkpoint."""


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    """Interface to bind; the default serves this machine only."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port for HTTP and the realtime websocket (0 picks a free port)."""
    api_key: str | None = None
    """When set, every request must carry ``Authorization: Bearer <key>`` (principal ``default``)."""
    api_keys: dict[str, str] = Field(default_factory=dict)
    """More keys, one per principal: ``{name: key}``. Sessions, files and artifacts belong to the
    principal whose key made them; names are 1-64 letters, digits, ``_.-``."""
    threads: int | None = Field(None, ge=1)
    """Threads torch/OpenMP give each compute thread of ``serve`` (engine step, TTS, audio workers); None:
    half the cores, at least one. ``serve`` sets it before torch starts (``OMP_NUM_THREADS`` wins if set):
    a second thread per step mostly spins against the other threads and sessions on shared cores."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Origins whose web pages may call this server from a browser (CORS and the realtime websocket's
    ``Origin``). Empty (the default) admits only clients without an ``Origin`` (SDKs, the CLI) and pages
    served by this server itself; ``["*"]`` admits every page
    (``OMNI_AGENT_SERVER__ALLOWED_ORIGINS='["https://app.example"]'``)."""
    max_request_bytes: int = Field(16 * 2**20, ge=1024)
    """Largest HTTP request body (chat completions with inline media); larger ones get 413 at once."""
    max_upload_bytes: int = Field(512 * 2**20, ge=1024)
    """Largest ``POST /v1/files`` body (a video upload)."""

    @field_validator("api_keys")
    @classmethod
    def _principal_names(cls, v: dict[str, str]) -> dict[str, str]:
        from omni_agent.principal import NAME

        for name, key in v.items():
            if not NAME.match(name):
                raise ValueError(f"principal name {name!r} must be 1-64 letters, digits or _.-")
            if len(key) < 8:
                raise ValueError(f"the key of principal {name!r} is shorter than 8 characters")
        if len(set(v.values())) != len(v):
            raise ValueError("two principals share one key")
        return v


class EngineSettings(_Section):
    max_batch_size: int = Field(32, ge=1)
    """Most requests decoded together in one step."""
    kv_cache_mb: int = Field(512, ge=1)
    """Memory budget for the KV cache (running requests plus reusable prefixes)."""
    max_model_len: int = Field(8192, ge=16)
    """Longest prompt plus completion, in tokens."""
    default_max_tokens: int = Field(256, ge=1)
    """Completion length when a request does not say."""
    backend: Literal["embedded", "vllm"] = "embedded"
    """``embedded``: the in-process engine. ``vllm``: the thinker runs in vLLM with the Ming plugin
    (``make vllm``); the runtime starts the server, or connects to ``vllm_url``."""
    vllm_url: str | None = None
    """A running ``omni_agent_vllm.serve`` to connect to (``backend = "vllm"``); None starts one."""
    vllm_args: list[str] = Field(default_factory=list)
    """Extra flags for the started vLLM server (e.g. ``["--tensor-parallel-size", "2", "--dtype", "bfloat16"]``)."""


class RealtimeSettings(_Section):
    max_event_bytes: int = Field(15 * 2**20, ge=1024)
    """Largest client event accepted (OpenAI's limit is 15 MiB)."""
    max_buffered_audio_s: float = Field(120.0, gt=0)
    """Most uncommitted input audio kept per session."""
    max_events_per_s: float = Field(400.0, gt=0)
    """Per-session client event rate limit (token bucket); audio appends are limited by duration instead."""
    audio_rate_limit: float = Field(10.0, gt=0)
    """Input audio accepted per second of wall time, in seconds (10 = ten times real time), beyond a
    burst of twice ``max_buffered_audio_s`` (a client's buffered speech sent at once)."""
    audio_workers: int = Field(2, ge=1)
    """Threads decoding, resampling and running VAD on input audio (shared by all sessions)."""
    context_tokens: int | None = Field(None, ge=64)
    """Context length for truncation when the responder does not expose its engine (default: the engine's)."""
    max_outbound_bytes: int = Field(64 * 2**20, ge=64 * 1024)
    """Bytes of server events queued for a slow client before the session is closed."""
    journal_db: str | None = None
    """SQLite file where sessions opened with ``?session_id=`` keep their numbered events (replay) and
    conversation items (restored after a restart); None keeps nothing (``serve`` puts it next to
    ``agent.checkpoint_db``)."""
    replay_bytes: int = Field(16 * 2**20, ge=64 * 1024)
    """Newest server events kept per journaled session for replay."""


class AgentSettings(_Section):
    max_steps: int = Field(8, ge=1)
    """Most think/tool rounds in one response."""
    checkpoint_db: str = Field("~/.local/share/omni-agent/sessions.sqlite", validate_default=True)
    """SQLite file for the agent graph's checkpoints (sessions survive restarts); ``~`` is expanded.
    Artifacts (generated images, user audio) go to a folder beside it."""
    tool_timeout_s: float = Field(300.0, gt=0)
    """A tool call that runs longer is reported to the model as failed."""
    max_reply_tokens: int = Field(256, ge=1)
    """Output-token budget of one reply (tool rounds included) when the client sets none (realtime
    ``max_output_tokens: "inf"``): random weights never stop on their own."""
    max_reply_audio_s: float = Field(20.0, gt=0)
    """Most seconds of speech in one spoken reply; the rest of the answer is written, not spoken."""

    @field_validator("checkpoint_db")
    @classmethod
    def _expand_home(cls, v: str) -> str:
        return os.path.expanduser(v)


class Settings(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Logging level for the runtime's own messages (stderr)."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise SettingsError(f"invalid setting {'.'.join(path)}: {key} is not a section")
        tree = node
    tree[path[-1]] = value


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from ``OMNI_AGENT_*`` variables, and which variable set each dotted field."""
    layer: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split(ENV_NESTING)]
        value: Any = raw
        if raw[:1] in "[{":  # lists (allowed_origins) come as JSON
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                pass
        _set_path(layer, path, value)
        origin[".".join(path)] = name
    return layer, origin


def _file_layer(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"config file {path} is not valid TOML: {e}") from None


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Build the settings from flags (dotted keys: ``{"server.port": 9000}``), env, file, defaults.

    Raises:
        SettingsError: with one line naming the offending field and where its value came from.
    """
    env = os.environ if env is None else env
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    layers: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if config_file:
        file_layer = _file_layer(Path(config_file))
        layers = _merge(layers, file_layer)
    env_layer, env_origin = _env_layer(env)
    layers = _merge(layers, env_layer)
    origin.update(env_origin)
    flag_layer: dict[str, Any] = {}
    for dotted, value in (flags or {}).items():
        _set_path(flag_layer, dotted.split("."), value)
        origin[dotted] = "--" + dotted.split(".")[-1].replace("_", "-")
    layers = _merge(layers, flag_layer)
    try:
        return Settings.model_validate(layers)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        source = origin.get(field) or (f"config file {config_file}" if config_file else "defaults")
        raise SettingsError(f"invalid setting {field}: {err['msg']} (from {source})") from None
