"""Slow clients are not held forever, and only the Host names a service is reached by are
answered: a real uvicorn server with the service's own configuration (shared.serve)."""

from __future__ import annotations

import asyncio
import time

import httpx
import uvicorn

from shared.embedded import free_port
from shared.serve import server_config
from tests.access.support import build_app, migrate
from tests.support import API_KEY


async def _served(database_url: str, **overrides):
    await migrate("retention", database_url)
    app = build_app(
        "retention", database_url, http_header_timeout_s=1.0, http_body_timeout_s=1.0, port=free_port(), **overrides
    )
    settings = app.state.runtime.settings
    # No lifespan: the broker is not needed to see the server's limits.
    server = uvicorn.Server(server_config(app, settings, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn.Server has only a `started` flag to wait on
        await asyncio.sleep(0.02)
    return server, task, settings.port


async def _raw(port: int, *chunks: bytes, pause: float) -> tuple[bytes, float]:
    """Send ``chunks`` with ``pause`` between them; what came back and after how long."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    received = bytearray()

    async def read_all() -> None:
        try:
            while chunk := await reader.read(4096):
                received.extend(chunk)
        except ConnectionError:
            pass

    reading = asyncio.create_task(read_all())
    try:
        for chunk in chunks:
            if reading.done():
                break
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:
        pass
    await asyncio.wait_for(reading, 10)
    answer = bytes(received)
    writer.close()
    return answer, time.monotonic() - started


async def test_slow_headers_slow_bodies_and_silent_connections_are_cut(database_url: str) -> None:
    server, task, port = await _served(database_url)
    try:
        # Headers trickled a byte every 0.3 s: cut after the 1 s header deadline with 408.
        trickle = [bytes([b]) for b in b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1234567890\r\n\r\n"]
        answer, took = await _raw(port, *trickle, pause=0.3)
        assert answer.startswith(b"HTTP/1.1 408") and took < 3, (answer, took)
        # A body that never completes.
        head = f"POST /referrals HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: 1000\r\n\r\n"
        answer, took = await _raw(port, head.encode(), b"{" * 10, pause=2.5)
        assert answer.startswith(b"HTTP/1.1 408") and took < 4, (answer, took)
        # Refused before its body is read, then the rest never comes: closed, nothing more said.
        answer, took = await _raw(
            port, b"POST /referrals HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n", b"x" * 10, pause=2.5
        )
        # One answer only (not "408" anywhere: a random request id may hold those digits).
        assert answer.startswith(b"HTTP/1.1 401") and answer.count(b"HTTP/1.1 ") == 1 and took < 4, (answer, took)
        # A connection that says nothing at all.
        answer, took = await _raw(port, b"", pause=0)
        assert answer.startswith(b"HTTP/1.1 408") and took < 3
        # Meanwhile a normal client is answered at once.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/health/live")).status_code == 200
    finally:
        server.should_exit = True
        await task


async def test_only_the_allowed_hosts_are_answered(database_url: str) -> None:
    server, task, port = await _served(database_url, allowed_hosts=["retention", "localhost"])
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/health/live", headers={"Host": "evil.example"})).status_code == 400
            assert (await http.get("/health/live", headers={"Host": f"retention:{port}"})).status_code == 200
    finally:
        server.should_exit = True
        await task
