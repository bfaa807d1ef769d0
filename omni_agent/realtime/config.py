"""A realtime session's configuration: one internal shape, read from and rendered to GA or Beta JSON."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from omni_agent.realtime.events import AudioFormatIn, ProtocolError, ResponseParamsIn, SessionIn

AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
GA_FORMAT = {"pcm16": {"type": "audio/pcm", "rate": 24000}, "g711_ulaw": {"type": "audio/pcmu"},
              "g711_alaw": {"type": "audio/pcma"}}
_FROMGA_FORMAT = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
DEFAULT_INSTRUCTIONS = "You are a helpful, concise voice assistant. Answer in the user's language."
DEFAULT_VOICE = "default"
VOICES = ("default", "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
"""Voice names the server accepts; each selects its own speaker embedding of the talker."""
MAX_OUTPUT_TOKENS_CAP = 4096  # OpenAI's own limit for one response
JSON_SCHEMA_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _not_implemented(param: str, what: str) -> ProtocolError:
    return ProtocolError("unsupported_option", f"{param}: {what} is not implemented by this server", param=param)


class TurnDetection(BaseModel):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None


class Transcription(BaseModel):
    model: str = "omni-asr"
    language: str | None = None
    """Language or dialect hint put first in the ASR prompt."""
    prompt: str | None = None


class SessionConfig(BaseModel):
    """Everything ``session.update`` can set; validated when the update arrives."""

    id: str = Field(default_factory=lambda: f"sess_{uuid.uuid4().hex[:20]}")
    model: str | None = None
    """The model name the client asked for (echoed back); None renders ``omni-agent`` (GA) or nothing (Beta)."""
    truncation: Any = "auto"
    """``"auto"``, ``"disabled"`` or a ``RetentionRatioIn`` (see ``truncation.py``)."""
    protocol: Literal["ga", "beta"] = "ga"
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = DEFAULT_VOICE
    output_modalities: list[Literal["text", "audio"]] = Field(default_factory=lambda: ["audio"])
    input_format: AudioFormat = "pcm16"
    output_format: AudioFormat = "pcm16"
    turn_detection: TurnDetection | None = Field(default_factory=TurnDetection)
    transcription: Transcription | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    temperature: float = 0.8
    max_output_tokens: int | Literal["inf"] = "inf"
    omni_events: bool = False
    """Send our extension events (``omni.tool.progress``, ``omni.artifact``, ``omni.confirmation.request``)."""

    @property
    def beta(self) -> bool:
        return self.protocol == "beta"

    # ---------------------------------------------------------------------------------- reading

    def updated(self, s: SessionIn, raw: dict[str, Any], has_responded_audio: bool = False) -> SessionConfig:
        """A copy with ``s`` applied (fields absent from the update keep their value).

        Raises:
            ProtocolError: an inconsistent update (both modalities, voice change after audio).
        """
        new = self.model_copy(deep=True)
        fields = s.model_fields_set
        if s.protocol is not None:
            new.protocol = s.protocol
        elif s.is_beta_shape():
            new.protocol = "beta"
        if s.model is not None:
            new.model = s.model
        if s.instructions is not None:
            new.instructions = s.instructions
        if s.truncation is not None:
            new.truncation = s.truncation
        if s.tracing is not None:
            raise _not_implemented("session.tracing", "tracing")
        if s.include:
            raise _not_implemented("session.include", f"include {s.include}")
        if s.prompt is not None:
            raise _not_implemented("session.prompt", "stored prompts")
        if s.tools is not None:
            new.tools = [_tool(t, f"session.tools.{i}") for i, t in enumerate(s.tools)]
        if s.tool_choice is not None:
            new.tool_choice = _tool_choice(s.tool_choice, new.tools, "session.tool_choice")
        elif s.tools is not None:
            _tool_choice(new.tool_choice, new.tools, "session.tool_choice")
        if s.temperature is not None:
            new.temperature = s.temperature
        for name in ("max_output_tokens", "max_response_output_tokens"):
            value = getattr(s, name)
            if value is not None:
                if value != "inf" and not 1 <= value <= MAX_OUTPUT_TOKENS_CAP:
                    raise ProtocolError("invalid_value", f"{name} must be 1..{MAX_OUTPUT_TOKENS_CAP} or 'inf'",
                                        param=f"session.{name}")
                new.max_output_tokens = value
        modalities = s.output_modalities if s.output_modalities is not None else s.modalities
        if modalities is not None:
            new.output_modalities = _modalities(modalities, "session.output_modalities")
        if s.omni_events is not None:
            new.omni_events = s.omni_events
        # Beta flat fields
        voice = s.voice
        if s.input_audio_format:
            new.input_format = s.input_audio_format
        if s.output_audio_format:
            new.output_format = s.output_audio_format
        if "input_audio_transcription" in fields:
            new.transcription = _transcription(s.input_audio_transcription)
        if "turn_detection" in fields:
            new.turn_detection = _turn_detection(s.turn_detection, new.turn_detection)
        # GA nested audio
        if s.audio is not None:
            if s.audio.input is not None:
                inp, inp_fields = s.audio.input, s.audio.input.model_fields_set
                if inp.noise_reduction is not None:
                    raise _not_implemented("session.audio.input.noise_reduction", "noise reduction")
                if inp.format is not None:
                    new.input_format = _format(inp.format)
                if "transcription" in inp_fields:
                    new.transcription = _transcription(inp.transcription)
                if "turn_detection" in inp_fields:
                    new.turn_detection = _turn_detection(inp.turn_detection, new.turn_detection)
            if s.audio.output is not None:
                if s.audio.output.format is not None:
                    new.output_format = _format(s.audio.output.format)
                if s.audio.output.speed is not None and s.audio.output.speed != 1.0:
                    raise _not_implemented("session.audio.output.speed", f"speed {s.audio.output.speed:g}")
                if s.audio.output.voice is not None:
                    voice = _voice(s.audio.output.voice, "session.audio.output.voice")
        if s.input_audio_noise_reduction is not None:
            raise _not_implemented("session.input_audio_noise_reduction", "noise reduction")
        if s.speed is not None and s.speed != 1.0:
            raise _not_implemented("session.speed", f"speed {s.speed:g}")
        if voice is not None:
            voice = _voice(voice, "session.voice")
        if voice is not None and voice != new.voice:
            if has_responded_audio:
                raise ProtocolError("voice_locked", "voice cannot change once the model has spoken",
                                    param="session.audio.output.voice")
            new.voice = voice
        return new

    # ---------------------------------------------------------------------------------- writing

    def render(self) -> dict[str, Any]:
        """The session object for ``session.created`` / ``session.updated``, in the session's flavour."""
        td = self.turn_detection.model_dump() if self.turn_detection else None
        tr = self.transcription.model_dump() if self.transcription else None
        if td is not None and td["idle_timeout_ms"] is None:
            del td["idle_timeout_ms"]
        truncation = self.truncation if isinstance(self.truncation, str) else self.truncation.model_dump(
            exclude_none=True)
        common = {"id": self.id, "object": "realtime.session", "instructions": self.instructions,
                  "tools": self.tools, "tool_choice": self.tool_choice, "temperature": self.temperature,
                  "tracing": None, "truncation": truncation}
        if self.beta:  # the Beta types only know OpenAI's model names: echo the client's, else none
            model = {"model": self.model} if self.model else {}
            return {**common, **model, "modalities": self.output_modalities, "voice": self.voice,
                    "input_audio_format": self.input_format, "output_audio_format": self.output_format,
                    "input_audio_transcription": tr, "turn_detection": td, "speed": 1.0,
                    "input_audio_noise_reduction": None, "max_response_output_tokens": self.max_output_tokens}
        return {**common, "type": "realtime", "model": self.model or "omni-agent", "include": None,
                "output_modalities": self.output_modalities, "max_output_tokens": self.max_output_tokens,
                "audio": {"input": {"format": GA_FORMAT[self.input_format], "transcription": tr,
                                    "turn_detection": td, "noise_reduction": None},
                          "output": {"format": GA_FORMAT[self.output_format], "voice": self.voice,
                                     "speed": 1.0}}}


def response_overrides(cfg: SessionConfig, p: ResponseParamsIn | None) -> dict[str, Any]:
    """``response.create`` overrides resolved against the session: instructions, modalities, voice..."""
    out: dict[str, Any] = {"instructions": cfg.instructions, "modalities": list(cfg.output_modalities),
                           "voice": cfg.voice, "output_format": cfg.output_format, "tools": cfg.tools,
                           "tool_choice": cfg.tool_choice, "temperature": cfg.temperature,
                           "max_output_tokens": cfg.max_output_tokens, "conversation": "auto",
                           "metadata": None, "input": None}
    if p is None:
        return out
    if p.instructions is not None:
        out["instructions"] = p.instructions
    modalities = p.output_modalities if p.output_modalities is not None else p.modalities
    if modalities is not None:
        out["modalities"] = _modalities(modalities, "response.output_modalities")
    voice = _voice(p.voice, "response.voice") if p.voice is not None else None
    if p.audio is not None and p.audio.output is not None:
        if p.audio.output.speed is not None and p.audio.output.speed != 1.0:
            raise _not_implemented("response.audio.output.speed", f"speed {p.audio.output.speed:g}")
        if p.audio.output.voice is not None:
            voice = _voice(p.audio.output.voice, "response.audio.output.voice")
        if p.audio.output.format is not None:
            out["output_format"] = _format(p.audio.output.format)
    if p.output_audio_format:
        out["output_format"] = p.output_audio_format
    if voice is not None:
        out["voice"] = voice
    if p.tools is not None:
        out["tools"] = [_tool(t, f"response.tools.{i}") for i, t in enumerate(p.tools)]
    if p.tool_choice is not None:
        out["tool_choice"] = p.tool_choice
    if p.tool_choice is not None or p.tools is not None:
        _tool_choice(out["tool_choice"], out["tools"], "response.tool_choice")
    if p.temperature is not None:
        out["temperature"] = p.temperature
    mot = p.max_output_tokens if p.max_output_tokens is not None else p.max_response_output_tokens
    if mot is not None:
        if mot != "inf" and not 1 <= mot <= MAX_OUTPUT_TOKENS_CAP:
            raise ProtocolError("invalid_value", f"max_output_tokens must be 1..{MAX_OUTPUT_TOKENS_CAP} or 'inf'",
                                param="response.max_output_tokens")
        out["max_output_tokens"] = mot
    if p.conversation is not None:
        out["conversation"] = p.conversation
    out["metadata"] = p.metadata
    out["input"] = p.input
    return out


def _modalities(m: list[str], param: str) -> list[Literal["text", "audio"]]:
    m = list(dict.fromkeys(m))
    if not m:
        raise ProtocolError("invalid_value", "output_modalities must not be empty", param=param)
    if len(m) > 1:
        # Beta accepted ["text", "audio"], meaning audio with a transcript.
        return ["audio"]
    return m  # type: ignore[return-value]


def _voice(v: str | dict[str, Any], param: str) -> str:
    name = v if isinstance(v, str) else v.get("id")
    if name not in VOICES:
        raise ProtocolError("invalid_value", f"unknown voice {name!r}; this server has {', '.join(VOICES)}",
                            param=param)
    return name


def _tool(t: Any, param: str) -> dict[str, Any]:
    """A function tool, its ``parameters`` checked to be a JSON schema of an object."""
    spec = t.model_dump(exclude_none=True)
    params = spec.get("parameters")
    if params is not None:
        problem = _schema_problem(params, "parameters")
        if problem is None and params.get("type", "object") != "object":
            problem = "parameters: the top-level schema must have type 'object'"
        if problem is not None:
            raise ProtocolError("invalid_value", f"tool {spec['name']!r}: {problem}", param=f"{param}.parameters")
    return spec


def _schema_problem(schema: Any, where: str) -> str | None:
    """Why ``schema`` is not a usable JSON schema (None when it is): types, properties, items, required."""
    if not isinstance(schema, dict):
        return f"{where} must be a JSON object"
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if any(not isinstance(k, str) or k not in JSON_SCHEMA_TYPES for k in kinds):
        return f"{where}.type must be one of {sorted(JSON_SCHEMA_TYPES)}"
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            return f"{where}.properties must be an object"
        for name, sub in props.items():
            if (problem := _schema_problem(sub, f"{where}.properties.{name}")) is not None:
                return problem
    required = schema.get("required")
    if required is not None and (not isinstance(required, list) or not all(isinstance(r, str) for r in required)):
        return f"{where}.required must be a list of property names"
    if "items" in schema and (problem := _schema_problem(schema["items"], f"{where}.items")) is not None:
        return problem
    if "enum" in schema and not isinstance(schema["enum"], list):
        return f"{where}.enum must be a list"
    return None


def _tool_choice(choice: str | dict[str, Any], tools: list[dict[str, Any]], param: str) -> str | dict[str, Any]:
    """``auto``/``none``/``required`` or ``{"type": "function", "name": ...}`` naming a declared tool."""
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise ProtocolError("invalid_value", f"tool_choice must be auto, none, required or a function, not {choice!r}",
                                param=param)
        return choice
    name = choice.get("name") or (choice.get("function") or {}).get("name")
    if choice.get("type") != "function" or not name:
        raise ProtocolError("invalid_value", 'tool_choice must be {"type": "function", "name": ...}', param=param)
    if name not in {t["name"] for t in tools}:
        raise ProtocolError("invalid_value", f"tool_choice names {name!r}, which is not a declared tool", param=param)
    return choice


def _format(f: AudioFormatIn) -> AudioFormat:
    return _FROMGA_FORMAT[f.type]  # type: ignore[return-value]


def _transcription(t: Any) -> Transcription | None:
    if t is None:
        return None
    return Transcription(**{k: v for k, v in t.model_dump().items() if v is not None})


def _turn_detection(t: Any, current: TurnDetection | None) -> TurnDetection | None:
    if t is None:
        return None
    base = current or TurnDetection()
    if t.type != "server_vad":
        raise _not_implemented("session.audio.input.turn_detection.type", f"turn detection {t.type!r}")
    if t.eagerness is not None:
        raise _not_implemented("session.audio.input.turn_detection.eagerness", "eagerness (semantic_vad)")
    values = {k: v for k, v in t.model_dump().items() if v is not None and k in TurnDetection.model_fields}
    if "idle_timeout_ms" in t.model_fields_set:
        values["idle_timeout_ms"] = t.idle_timeout_ms
    return base.model_copy(update=values)
