"""Server-sent events: `data: {json}` frames, and a response that stops when the client leaves.

The response streams its events and listens for `http.disconnect` at the same time; when
the client goes, the event generator is cancelled, so its cleanup (aborting the engine
sequences) runs at once instead of at the next failed write.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

DONE = "data: [DONE]\n\n"


def choice_chunk(meta: dict[str, Any], kind: str, entry: dict[str, Any], stop_reason: Any,
                 token_ids: list[int] | None, include_usage: bool) -> str:
    """One streamed choice as an SSE event: stop_reason once finished, token ids when asked, a null usage slot."""
    if entry.get("finish_reason") is not None:
        entry["stop_reason"] = stop_reason
    if token_ids is not None:
        entry["token_ids"] = token_ids
    payload = {**meta, "object": kind, "choices": [entry]}
    if include_usage:
        payload["usage"] = None
    return sse(payload)


def sse(payload: dict[str, Any]) -> str:
    """One SSE frame carrying a JSON object."""
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


class EventStreamResponse(Response):
    """A text/event-stream response fed by an async iterator of frames."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], headers: dict[str, str] | None = None):
        # No Response.__init__: it would render an empty body and announce Content-Length: 0.
        self.status_code = 200
        self.background = None
        self.events = events
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def stream() -> None:
            async for frame in self.events:
                await send({"type": "http.response.body", "body": frame.encode("utf-8"), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        streamer = asyncio.create_task(stream())
        watcher = asyncio.create_task(watch())
        try:
            done, _ = await asyncio.wait({streamer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if streamer in done:
                streamer.result()
        finally:
            for task in (streamer, watcher):
                task.cancel()
            await asyncio.gather(streamer, watcher, return_exceptions=True)
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
