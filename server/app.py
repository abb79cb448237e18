"""The FastAPI app factory: routes, auth, errors, request ids and structured access logs."""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent_runtime import __version__
from server.chat import chat_completions
from server.completions import completions
from server.errors import APIError, install_error_handlers
from server.response_schemas import ResponseRequest
from server.response_store import owner_of
from server.responses import create_response, delete_stored_response, list_input_items, stored_response
from server.schemas import ChatCompletionRequest, CompletionRequest
from server.state import ServerState

log = logging.getLogger("server.access")


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await state.start()
        yield
        await state.aclose()  # sandbox workers and the engine go with the server

    app = FastAPI(
        title="tapo-agents",
        version=__version__,
        summary="OpenAI-compatible API that runs a tool-using reasoning agent server-side.",
        lifespan=lifespan,
    )
    app.state.tapo = state
    install_error_handlers(app)
    app.add_middleware(RequestLogMiddleware)

    def require_key(request: Request) -> str:
        """The caller, as the owner of what it stores (:func:`~server.response_store.owner_of` its key)."""
        if not state.api_keys:
            return owner_of(None)
        # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError,
        # so a 500). Header values arrive as raw bytes, which Starlette decodes as latin-1: encoding
        # back gives the bytes the client sent, so a UTF-8 key matches when sent as UTF-8. (A key
        # read from an environment that is not UTF-8 keeps its bytes through surrogateescape.)
        header = request.headers.get("authorization", "").encode("latin-1")
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        # Every key is compared, so that the time taken says nothing about which one matched.
        matches = [k for k in state.api_keys if secrets.compare_digest(token, k.encode("utf-8", "surrogateescape"))]
        if scheme.lower() == b"bearer" and matches:
            return owner_of(matches[0])
        raise APIError(401, "invalid or missing API key (send Authorization: Bearer KEY)", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request, owner: str = Depends(require_key)):
        return await chat_completions(body, request, state, owner)

    @app.post("/v1/completions", dependencies=[Depends(require_key)])
    async def complete(body: CompletionRequest, request: Request):
        return await completions(body, request, state)

    @app.post("/v1/responses")
    async def responses(body: ResponseRequest, request: Request, owner: str = Depends(require_key)):
        return await create_response(body, request, state, owner)

    @app.get("/v1/responses/{response_id}")
    async def get_response(response_id: str, owner: str = Depends(require_key)):
        return (await stored_response(state, owner, response_id)).response

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, owner: str = Depends(require_key)):
        return await delete_stored_response(state, owner, response_id)

    @app.get("/v1/responses/{response_id}/input_items")
    async def input_items(response_id: str, owner: str = Depends(require_key),
                          limit: int = Query(20, ge=1, le=100), order: Literal["asc", "desc"] = "desc",
                          after: str | None = None):
        return await list_input_items(state, owner, response_id, limit=limit, order=order, after=after)

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def models():
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(require_key)])
    async def model(model_id: str):
        state.check_model(model_id)
        return _model_card(state)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": state.model_name, "in_flight": state.limiter.in_use}

    @app.get("/version")
    async def version():
        return {"version": __version__, "engine": state.backend.info.name, "model": state.model_name,
                "protocol": state.protocol.name}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _model_card(state: ServerState) -> dict:
    return {
        "id": state.model_name,
        "object": "model",
        "created": int(state.extra_info.get("created", time.time())),
        "owned_by": "tapo-agents",
        "max_model_len": state.backend.info.context_length,
        "tools": list(state.tools.names),
        "protocol": state.protocol.name,
    }


class RequestLogMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): streams and disconnects pass through untouched.

    Gives every request an id (``X-Request-ID``, taken from the client when sent) and logs one
    structured line per request when it ends.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request_id=%s method=%s path=%s status=%s seconds=%.3f",
                request_id, scope.get("method"), scope.get("path"), status, time.perf_counter() - started,
            )

