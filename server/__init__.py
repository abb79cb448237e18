"""OpenAI-compatible HTTP server that runs the agent loop server-side (FastAPI + sse-starlette)."""
