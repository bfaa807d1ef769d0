"""OpenAI-Realtime-compatible voice sessions (docs/realtime.md).

Modules: ``events`` (one pydantic model per protocol event, serialisation), ``config`` (session
options, GA and Beta shapes), ``conversation`` (items and history), ``formats`` (wire audio),
``session`` (client events -> server events), ``response`` (one response in flight, barge-in),
``responder`` (the ``Responder`` protocol and ``DirectResponder``), ``transcription`` (ASR through
the thinker), ``routes`` (the ``/v1/realtime`` websocket), ``metrics``, ``testing`` (test helpers).
"""
