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
MAX_OUTPUT_TOKENS_CAP = 4096  # OpenAI's own limit for one response


class TurnDetection(BaseModel):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True


class Transcription(BaseModel):
    model: str = "omni-asr"
    language: str | None = None
    """Language or dialect hint put first in the ASR prompt."""
    prompt: str | None = None


class SessionConfig(BaseModel):
    """Everything ``session.update`` can set; validated when the update arrives."""

    id: str = Field(default_factory=lambda: f"sess_{uuid.uuid4().hex[:20]}")
    model: str = "omni-agent"
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
        if s.instructions is not None:
            new.instructions = s.instructions
        if s.tools is not None:
            new.tools = [t.model_dump(exclude_none=True) for t in s.tools]
        if s.tool_choice is not None:
            new.tool_choice = s.tool_choice
        if s.temperature is not None:
            new.temperature = s.temperature
        for name in ("max_output_tokens", "max_response_output_tokens"):
            value = getattr(s, name)
            if value is not None:
                if value != "inf" and not 1 <= value <= MAX_OUTPUT_TOKENS_CAP:
                    raise ProtocolError("invalid_value", f"{name} must be 1..{MAX_OUTPUT_TOKENS_CAP} or 'inf'",
                                        param=f"session.{name}")
                new.max_output_tokens = value
        modalities = s.output_modalities or s.modalities
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
                if inp.format is not None:
                    new.input_format = _format(inp.format)
                if "transcription" in inp_fields:
                    new.transcription = _transcription(inp.transcription)
                if "turn_detection" in inp_fields:
                    new.turn_detection = _turn_detection(inp.turn_detection, new.turn_detection)
            if s.audio.output is not None:
                if s.audio.output.format is not None:
                    new.output_format = _format(s.audio.output.format)
                if s.audio.output.voice is not None:
                    v = s.audio.output.voice
                    voice = v if isinstance(v, str) else str(v.get("id", DEFAULT_VOICE))
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
        common = {"id": self.id, "object": "realtime.session", "model": self.model,
                  "instructions": self.instructions, "tools": self.tools, "tool_choice": self.tool_choice,
                  "temperature": self.temperature}
        if self.beta:
            return {**common, "modalities": self.output_modalities, "voice": self.voice,
                    "input_audio_format": self.input_format, "output_audio_format": self.output_format,
                    "input_audio_transcription": tr, "turn_detection": td,
                    "max_response_output_tokens": self.max_output_tokens}
        return {**common, "type": "realtime", "output_modalities": self.output_modalities,
                "max_output_tokens": self.max_output_tokens,
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
    modalities = p.output_modalities or p.modalities
    if modalities is not None:
        out["modalities"] = _modalities(modalities, "response.output_modalities")
    voice = p.voice
    if p.audio is not None and p.audio.output is not None:
        if p.audio.output.voice is not None:
            v = p.audio.output.voice
            voice = v if isinstance(v, str) else str(v.get("id", DEFAULT_VOICE))
        if p.audio.output.format is not None:
            out["output_format"] = _format(p.audio.output.format)
    if p.output_audio_format:
        out["output_format"] = p.output_audio_format
    if voice is not None:
        out["voice"] = voice
    if p.tools is not None:
        out["tools"] = [t.model_dump(exclude_none=True) for t in p.tools]
    if p.tool_choice is not None:
        out["tool_choice"] = p.tool_choice
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
    values = {k: v for k, v in t.model_dump().items() if v is not None and k in TurnDetection.model_fields}
    values["type"] = "server_vad"  # semantic_vad is served by the same Silero detector
    return base.model_copy(update=values)
