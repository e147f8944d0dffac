"""Requests are counted and timed by route template and status, errors included."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry

from shared.http import ObserveMiddleware
from shared.metrics import PlumbingMetrics


async def test_requests_are_counted_by_route_template_and_status() -> None:
    registry = CollectorRegistry()
    metrics = PlumbingMetrics("svc", registry)
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict:
        if thing_id == 0:
            raise HTTPException(404, "no such thing")
        return {"id": thing_id}

    app.add_middleware(ObserveMiddleware, metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.get("/things/1")).status_code == 200
        assert (await http.get("/things/2")).status_code == 200
        assert (await http.get("/things/0")).status_code == 404
        assert (await http.get("/nowhere")).status_code == 404

    def count(path: str, status: str) -> float | None:
        return registry.get_sample_value(
            "clientflow_http_requests_total", {"service": "svc", "method": "GET", "route": path, "status": status}
        )

    assert count("/things/{thing_id}", "200") == 2
    assert count("/things/{thing_id}", "404") == 1
    assert count("unmatched", "404") == 1
    assert (
        registry.get_sample_value(
            "clientflow_http_request_seconds_count", {"service": "svc", "method": "GET", "route": "/things/{thing_id}"}
        )
        == 3
    )
