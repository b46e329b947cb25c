"""The HTTP transport under the app: uvicorn's h11 protocol, guarded, and a shutdown that ends streams cleanly.

- TCP_NODELAY on every accepted socket: uvicorn writes a response's head and body separately,
  and with Nagle's algorithm the body then waits for the client's delayed ACK (~40 ms) on every
  keep-alive request after the first. (asyncio sets it only on sockets created with
  IPPROTO_TCP, which a socket bound by hand or inherited need not be.)
- A deadline for every request head (`header_timeout`, from the connection's start or the
  previous answer): uvicorn's keep-alive timer stops at the first byte, so a client that
  trickles a head, or keeps sending a body no endpoint reads, would hold its connection for
  ever. Bodies get their own deadline where they are read (request_body.read_json_body, 408).
- At most `max_connections` connections and requests in flight (uvicorn answers more with 503).
- Shutdown: stop accepting, end every open generation through the engine (streams get an error
  event and [DONE], waiting requests a 503), close connections still uploading, then let uvicorn
  drain. Without this, open streams were cancelled mid-chunk when the grace period ran out.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

_TIMED_OUT_TEXT = b"The request head did not arrive in time.\n"
REQUEST_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TIMED_OUT_TEXT),
                                                                                       _TIMED_OUT_TEXT))


class ServerConfig(uvicorn.Config):
    """uvicorn's Config with the guarded protocol and its head deadline."""

    def __init__(self, app: Any, *, header_timeout: float, max_connections: int, **kwargs: Any):
        super().__init__(app, http=GuardedH11Protocol, limit_concurrency=max_connections, **kwargs)
        self.header_timeout = header_timeout


class GuardedH11Protocol(H11Protocol):
    """h11 with TCP_NODELAY and a deadline for each request head; closes unfinished uploads at shutdown."""

    config: ServerConfig

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Set TCP_NODELAY and start waiting for the first request head."""
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def handle_events(self) -> None:
        """Parse what arrived; a new request cycle means its head is complete."""
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        """The answer is out: the next request head has `header_timeout` seconds to arrive."""
        cycle = self.cycle
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is cycle:  # else a pipelined request has begun
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the head deadline with the connection."""
        self._cancel_head_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Server shutdown: a connection still sending its body is closed (the app sees a disconnect)."""
        if self.cycle is not None and self.cycle.more_body and not self.cycle.response_started:
            self.transport.close()
            return
        super().shutdown()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.config.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
            self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose shutdown ends open generations (`drain`) before it waits for connections."""

    def __init__(self, config: ServerConfig, drain: Callable[[], Awaitable[None]]):
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, drain the engine, then uvicorn's own graceful shutdown."""
        for server in self.servers:
            server.close()  # no new connections while the engine winds down (uvicorn closes them again)
        await self.drain()
        await super().shutdown(sockets)


def build_server(app: Any, **config: Any) -> DrainingServer:
    """The server for an app made by create_app: its settings' connection limits, its engine's drain."""
    state = app.state.qwen35
    settings = state.settings
    server_config = ServerConfig(app, header_timeout=settings.header_timeout, max_connections=settings.max_connections,
                                 timeout_graceful_shutdown=5, **config)
    return DrainingServer(server_config, state.engine.stop)
