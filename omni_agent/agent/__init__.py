"""The agent loop: a LangGraph graph that thinks, calls tools, speaks, persists and asks first.

Entry points: :func:`omni_agent.agent.graph.build_graph`, :class:`omni_agent.agent.runner.AgentRunner`,
:class:`omni_agent.agent.responder.AgentResponder` (the realtime/HTTP responder) and the test kit's
:class:`omni_agent.agent.models.ScriptedChatModel`. See docs/agent.md.
"""
