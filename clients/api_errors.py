"""What the ``openai`` SDK raised, as one sentence a person can act on (the page and ``tapo chat``)."""

from __future__ import annotations

import openai

__all__ = ["error_text"]


def error_text(exc: Exception, api_base: str) -> str:
    if isinstance(exc, openai.AuthenticationError):
        return "The API refused the key: enter the server's API key (Settings on the page, --api-key in tapo chat)."
    if isinstance(exc, openai.APIConnectionError):
        return f"Cannot reach the agent API at {api_base}: is the server running?"
    if isinstance(exc, openai.APIStatusError):
        return f"The API answered {exc.status_code}: {_api_message(exc)}"
    if isinstance(exc, openai.APIError):
        return f"The API reported an error: {exc.message}"
    return f"Unexpected error: {exc}"


def _api_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        body = body.get("error", body)
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    return exc.message
