"""Bodies over the limit get 413 however they arrive: announced by Content-Length or streamed
in chunks without one (the framework's body parser must not turn the refusal into a 400)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from shared.http import BodyLimitMiddleware


class Note(BaseModel):
    text: str


def app(limit: int) -> FastAPI:
    api = FastAPI()

    @api.post("/notes")
    async def post_note(note: Note) -> dict[str, int]:
        return {"length": len(note.text)}

    api.add_middleware(BodyLimitMiddleware, max_bytes=limit)
    return api


async def post(body, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app(1000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/notes", content=body, headers={"content-type": "application/json", **headers})


async def test_a_body_within_the_limit_goes_through() -> None:
    response = await post(b'{"text": "hello"}')
    assert response.status_code == 200 and response.json() == {"length": 5}


async def test_an_announced_body_over_the_limit_gets_413() -> None:
    response = await post(b'{"text": "' + b"x" * 2000 + b'"}')
    assert response.status_code == 413
    assert response.json() == {"detail": "body larger than 1000 bytes"}


async def test_a_streamed_body_over_the_limit_gets_413_not_a_parse_error() -> None:
    async def chunks():
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 300
        yield b'"}'

    response = await post(chunks())
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": "body larger than 1000 bytes"}
