"""The OpenAI-compatible HTTP server (``create_app``) and the routers other parts mount on it."""
