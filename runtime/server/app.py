"""The FastAPI app: routes, error rendering, request metrics and the engine's lifetime."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen35.runtime.engine.async_engine import AsyncEngine
from qwen35.runtime.server.auth import ApiKeyMiddleware
from qwen35.runtime.server.chat import create_chat_completion
from qwen35.runtime.server.completions import create_completion
from qwen35.runtime.server.errors import APIError, bad_request
from qwen35.runtime.server.metrics import CONTENT_TYPE, ServerMetrics
from qwen35.runtime.server.serving import ServerState
from qwen35.runtime.server.settings import ServerSettings

logger = logging.getLogger("qwen35.server")

ENDPOINTS = ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions")


class RequestMetricsMiddleware:
    """Counts every HTTP response by endpoint (known paths, else "other") and status code."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                self.metrics.requests.inc(endpoint, str(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not started:
                self.metrics.requests.inc(endpoint, "500")


def create_app(engine: AsyncEngine, tokenizer: Any, settings: ServerSettings) -> FastAPI:
    """An OpenAI-compatible app over an engine; the engine loop runs for the app's lifetime."""
    settings.validate()
    if settings.max_model_len > engine.config.max_model_len:
        raise ValueError(f"settings.max_model_len {settings.max_model_len} exceeds the engine's "
                         f"{engine.config.max_model_len}")
    metrics = ServerMetrics(running=lambda: engine.num_running, waiting=lambda: engine.num_waiting,
                            kv_cache_usage=lambda: engine.kv_cache_usage)
    engine.observer = metrics
    state = ServerState(engine, tokenizer, settings, metrics)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="qwen35", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.qwen35 = state

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return APIError(error.status_code, str(error.detail), code="not_found" if error.status_code == 404 else None,
                        headers=dict(error.headers or {})).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return bad_request(str(error)).response()

    @app.exception_handler(Exception)
    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("request failed")
        return APIError(500, f"Internal server error: {type(error).__name__}.", error_type="server_error").response()

    @app.get("/health")
    async def health():
        """Liveness and readiness: 200 while the engine loop runs."""
        running = engine.is_running
        return JSONResponse({"status": "ok" if running else "stopped"}, status_code=200 if running else 503)

    @app.get("/metrics")
    async def prometheus_metrics():
        """Prometheus text exposition."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models():
        """The served model names."""
        data = [{"id": name, "object": "model", "created": created, "owned_by": "qwen35",
                 "root": settings.model_root or name, "max_model_len": settings.max_model_len}
                for name in settings.served_model_names]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        """OpenAI chat completions (streaming and not)."""
        return await create_chat_completion(request, state)

    @app.post("/v1/completions")
    async def completions(request: Request):
        """OpenAI legacy completions (streaming and not)."""
        return await create_completion(request, state)

    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
