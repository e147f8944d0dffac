"""Past its capacity a service refuses the excess writes at once (503 with Retry-After, nothing
done) instead of queueing them until every request is slow; reads and health checks pass."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared.http import AdmissionMiddleware
from shared.metrics import PlumbingMetrics
from tests.access.support import build_app


async def test_writes_past_the_limit_are_refused_at_once_and_reads_pass() -> None:
    registry = CollectorRegistry()
    metrics = PlumbingMetrics("svc", registry)
    app = FastAPI()
    release = asyncio.Event()
    done: list[int] = []

    @app.post("/things/{n}")
    async def write(n: int) -> dict:
        await release.wait()
        done.append(n)
        return {"n": n}

    @app.get("/health/live")
    async def live() -> dict:
        return {"status": "ok"}

    app.add_middleware(AdmissionMiddleware, metrics=metrics, max_writes=4)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        held = [asyncio.create_task(http.post(f"/things/{n}")) for n in range(4)]
        await asyncio.sleep(0.05)
        refused = await asyncio.gather(*(http.post(f"/things/{n}") for n in range(10, 13)))
        probe = await http.get("/health/live")
        release.set()
        accepted = await asyncio.gather(*held)
        after = await http.post("/things/99")
    assert [r.status_code for r in accepted] == [200, 200, 200, 200]
    assert [r.status_code for r in refused] == [503, 503, 503]
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert "busy: 4 writes are in progress" in refused[0].json()["detail"]
    assert sorted(done) == [0, 1, 2, 3, 99]  # nothing of the refused ones ran
    assert probe.status_code == 200 and after.status_code == 200
    assert registry.get_sample_value("clientflow_http_shed_total", {"service": "svc"}) == 3


def test_every_service_admits_as_many_writes_as_its_setting_says(database_url: str) -> None:
    app = build_app("retention", database_url, http_max_writes_in_flight=7)
    layers = [m for m in app.user_middleware if m.cls is AdmissionMiddleware]
    assert len(layers) == 1 and layers[0].kwargs["max_writes"] == 7
