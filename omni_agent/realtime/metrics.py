"""Prometheus figures of the realtime server (default registry, so ``/metrics`` shows them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_MS_BUCKETS = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000)

SESSIONS_ACTIVE = Gauge("omni_realtime_sessions_active", "Open realtime websocket sessions")
SESSIONS_TOTAL = Counter("omni_realtime_sessions_total", "Realtime sessions opened")
CONNECTIONS_REFUSED = Counter("omni_realtime_connections_refused_total", "Realtime connections refused",
                              ["reason"])
CLIENT_EVENTS = Counter("omni_realtime_client_events_total", "Client events received", ["type"])
SERVER_EVENTS = Counter("omni_realtime_server_events_total", "Server events sent", ["type"])
ERRORS = Counter("omni_realtime_errors_total", "error events sent to clients", ["code"])
RESPONSES = Counter("omni_realtime_responses_total", "Responses finished", ["status"])
FIRST_AUDIO_MS = Histogram("omni_realtime_vad_to_first_audio_ms",
                           "Server VAD speech_stopped to first audio delta written (ms)", buckets=_MS_BUCKETS)
OVERHEAD_MS = Histogram("omni_realtime_overhead_ms",
                        "First-audio latency minus the model's own compute (ms)", buckets=_MS_BUCKETS)
BARGE_IN_MS = Histogram("omni_realtime_barge_in_stop_ms",
                        "speech_started during a response to the response being stopped (ms)", buckets=_MS_BUCKETS)
AUDIO_IN_SECONDS = Counter("omni_realtime_input_audio_seconds_total", "Input audio received (s)")
AUDIO_OUT_SECONDS = Counter("omni_realtime_output_audio_seconds_total", "Output audio sent (s)")
SLOW_CLIENT_CLOSES = Counter("omni_realtime_slow_client_closes_total",
                             "Sessions closed because the client did not read its events")
