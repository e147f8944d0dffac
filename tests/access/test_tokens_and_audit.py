"""Tokens, refusals, the Idempotency-Key behind them, lockout and the audit trail, on one
service in-process over its real database (PostgreSQL in CI, else SQLite)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from shared.access.principal import token_hash
from shared.db import AuditRow, IdempotencyKeyRow
from tests.access.support import add_person, build_app, expired, migrate
from tests.support import API_KEY

LEAD = {"name": "Ada", "email": "ada@example.com", "channel": "website", "consent_marketing": True}


@pytest.fixture
async def leads(database_url: str):
    await migrate("leads", database_url)
    app = build_app("leads", database_url, auth_lockout_failures=5)
    runtime = app.state.runtime
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://leads") as http:
        yield app, runtime, http
    await runtime.engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_are_kept_as_digests_and_refused_when_expired_revoked_or_disabled(leads) -> None:
    _app, runtime, http = leads
    sessions = runtime.uow.sessions
    _, good = await add_person(sessions, "sales")
    _, old = await add_person(sessions, "sales", expires_at=expired())
    _, revoked = await add_person(sessions, "sales", revoked=True)
    _, gone = await add_person(sessions, "sales", active=False)
    assert (await http.get("/me", headers=bearer(good))).json()["actor"]["role"] == "sales"
    answers = {
        name: await http.get("/leads", headers=bearer(token))
        for name, token in {
            "expired": old,
            "revoked": revoked,
            "disabled": gone,
            "made up": "cf_" + "0" * 12 + "_" + "A" * 43,
        }.items()
    }
    assert {name: (r.status_code, r.json()["detail"]) for name, r in answers.items()} == {
        "expired": (401, "token expired"),
        "revoked": (401, "token revoked"),
        "disabled": (401, "person disabled"),
        "made up": (401, "invalid token"),
    }
    async with sessions() as session:
        stored = set(await session.scalars(text("SELECT token_hash FROM access_tokens")))
        dump = " ".join(
            str(v) for row in (await session.execute(text("SELECT * FROM access_tokens"))).all() for v in row
        )
    assert token_hash(good) in stored
    assert good not in dump and good.split("_")[-1] not in dump  # the token itself is nowhere


async def test_a_scoped_token_reaches_its_scope_only(leads) -> None:
    _, runtime, http = leads
    _, form = await add_person(runtime.uow.sessions, "sales", kind="integration", scopes=["leads.capture"])
    captured = await http.post("/leads", json=LEAD, headers=bearer(form))
    assert captured.status_code == 201, captured.text
    read = await http.get("/leads", headers=bearer(form))
    assert read.status_code == 403 and "limited to leads.capture" in read.json()["detail"]
    me = (await http.get("/me", headers=bearer(form))).json()
    assert me["actor"]["kind"] == "integration" and me["scopes"] == ["leads.capture"]
    assert me["permissions"] == ["leads.capture"]


async def test_the_token_is_checked_before_the_idempotency_key_and_the_body(leads) -> None:
    _, runtime, http = leads
    _, viewer = await add_person(runtime.uow.sessions, "viewer")
    key = {"Idempotency-Key": "pay-123"}
    nobody = await http.post("/leads", content=b"{not json", headers=key | {"content-type": "application/json"})
    assert nobody.status_code == 401
    forbidden = await http.post(
        "/leads", content=b"{not json", headers=key | bearer(viewer) | {"content-type": "application/json"}
    )
    assert forbidden.status_code == 403
    async with runtime.uow.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyKeyRow)) == 0


async def test_idempotency_keys_belong_to_their_caller(leads) -> None:
    _, runtime, http = leads
    _, maria = await add_person(runtime.uow.sessions, "sales")
    _, omar = await add_person(runtime.uow.sessions, "sales")
    key = {"Idempotency-Key": "capture-1"}
    first = await http.post(
        "/leads", json=LEAD | {"email": "one@one.example", "name": "One"}, headers=key | bearer(maria)
    )
    again = await http.post(
        "/leads", json=LEAD | {"email": "one@one.example", "name": "One"}, headers=key | bearer(maria)
    )
    assert first.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
    # Omar's "capture-1" is his own: neither a replay of Maria's answer nor a 409.
    other = await http.post(
        "/leads", json=LEAD | {"email": "two@two.example", "name": "Two"}, headers=key | bearer(omar)
    )
    assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    assert other.json()["lead_id"] != first.json()["lead_id"]
    async with runtime.uow.sessions() as session:
        keys = set(await session.scalars(select(IdempotencyKeyRow.key)))
    assert len(keys) == 2 and all(k.endswith(":capture-1") for k in keys)


async def test_repeated_bad_tokens_from_one_address_get_429_and_others_are_not_slowed(leads) -> None:
    app, runtime, http = leads
    _, known = await add_person(runtime.uow.sessions, "sales")
    assert (await http.get("/me", headers=bearer(known))).status_code == 200  # worked from here before
    answers = [await http.get("/leads", headers=bearer(f"guess-{i}")) for i in range(8)]
    assert [a.status_code for a in answers[:5]] == [401] * 5
    assert {a.status_code for a in answers[5:]} == {429}
    assert int(answers[-1].headers["retry-after"]) >= 1
    # A new token from the locked address is not even checked; one that worked there still works.
    _, fresh = await add_person(runtime.uow.sessions, "sales")
    assert (await http.get("/me", headers=bearer(fresh))).status_code == 429
    assert (await http.get("/me", headers=bearer(known))).status_code == 200
    # Another address is not slowed.
    elsewhere = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 1234)), base_url="http://leads"
    )
    async with elsewhere:
        assert (await elsewhere.get("/me", headers=bearer(fresh))).status_code == 200
    metrics = (await http.get("/metrics")).text
    assert 'clientflow_auth_failures_total{reason="invalid",service="leads"} 5.0' in metrics
    assert 'clientflow_auth_failures_total{reason="locked",service="leads"} 4.0' in metrics


async def test_every_write_and_every_read_of_one_person_is_audited_with_its_actor(leads) -> None:
    _, runtime, http = leads
    maria_id, maria = await add_person(runtime.uow.sessions, "sales")
    _, viewer = await add_person(runtime.uow.sessions, "viewer")
    lead = (await http.post("/leads", json=LEAD, headers=bearer(maria) | {"X-Request-ID": "0af7651916cd43dd"})).json()[
        "lead_id"
    ]
    named = await http.get("/funnel", headers=bearer(maria) | {"X-Request-ID": "Zebediah.Quillfeather"})
    assert named.headers["x-request-id"] != "Zebediah.Quillfeather"  # a name never reaches the audit trail
    assert (await http.get(f"/leads/{lead}", headers=bearer(maria))).status_code == 200
    assert (await http.get(f"/leads/{lead}", headers=bearer(viewer))).status_code == 403
    await http.get("/funnel", headers=bearer(viewer))  # an aggregate: not audited
    await runtime.audit.flush()
    page = (await http.get(f"/audit?lead_id={lead}", headers=bearer(API_KEY))).json()
    rows = [(i["action"], i["actor"]["role"], i["outcome"], i["status"]) for i in page["items"]]
    assert rows == [
        ("POST /leads", "sales", "ok", 201),
        ("GET /leads/{lead_id}", "sales", "ok", 200),
        ("GET /leads/{lead_id}", "viewer", "denied", 403),
    ]
    assert page["items"][0]["request_id"] == "0af7651916cd43dd"
    assert page["items"][0]["actor"] == {"kind": "person", "id": str(maria_id), "role": "sales"}
    by_maria = (await http.get(f"/audit?actor_id={maria_id}", headers=bearer(API_KEY))).json()["items"]
    assert len(by_maria) == 2
    assert (await http.get("/audit", headers=bearer(maria))).status_code == 403
    # The event the write caused names its actor too.
    async with runtime.uow.sessions() as session:
        payload = await session.scalar(text("SELECT payload FROM outbox WHERE event_type = 'lead.captured'"))
    import json

    assert json.loads(payload)["actor"] == {"kind": "person", "id": str(maria_id), "role": "sales"}


async def test_the_audit_trail_is_append_only(leads) -> None:
    _, runtime, http = leads
    await http.post("/leads", json=LEAD, headers=bearer(API_KEY))
    await runtime.audit.flush()
    for statement in ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with runtime.uow.sessions() as session, session.begin():
                await session.execute(text(statement))
    async with runtime.uow.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(AuditRow)) == 1


async def test_audit_filters_refuse_what_they_cannot_read(leads) -> None:
    _, _, http = leads
    admin = bearer(API_KEY)
    assert (await http.get("/audit?since=9999-12-31T23:59:59Z", headers=admin)).json()["items"] == []
    assert (await http.get("/audit?since=2026-01-01T00:00:00", headers=admin)).status_code == 422
    assert (await http.get("/audit?lead_id=nope", headers=admin)).status_code == 422
    assert (await http.get(f"/audit?after_id={2**63}", headers=admin)).status_code == 422
    assert (await http.get(f"/audit?actor_id={uuid.uuid4()}", headers=admin)).json()["items"] == []


async def test_basic_auth_and_an_empty_bearer_are_no_token(leads) -> None:
    _, _, http = leads
    for header in (f"Basic {API_KEY}", "Bearer ", "Bearer", API_KEY):
        answer = await http.get("/leads", headers={"Authorization": header})
        assert answer.status_code == 401, header


async def test_metrics_can_be_protected(database_url: str) -> None:
    await migrate("billing", database_url)
    app = build_app("billing", database_url, protect_metrics=True)
    runtime = app.state.runtime
    _, viewer = await add_person(runtime.uow.sessions, "viewer")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://billing") as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=bearer(viewer))).status_code == 200
        assert (await http.get("/health/live")).status_code == 200
    await runtime.engine.dispose()


async def test_expired_idempotency_keys_are_purged(leads) -> None:
    from datetime import timedelta

    _, runtime, http = leads
    await http.post("/leads", json=LEAD, headers=bearer(API_KEY) | {"Idempotency-Key": "old"})
    async with runtime.uow.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyKeyRow)) == 1
    await runtime._purge_idempotency_keys(runtime.clock.now() + timedelta(hours=23))
    async with runtime.uow.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyKeyRow)) == 1
    await runtime._purge_idempotency_keys(runtime.clock.now() + timedelta(hours=25))
    async with runtime.uow.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyKeyRow)) == 0


async def test_identical_reads_asked_at_once_share_one_computation() -> None:
    import asyncio

    from shared.reads import ReadPool

    runs = 0

    class Fallback:
        def __call__(self):
            return self

        async def __aenter__(self):
            return None

        async def __aexit__(self, *exc: object) -> None:
            return None

    async def read(_tx: object) -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return 42

    pool = ReadPool("sqlite+aiosqlite:///:memory:", producer="test", clock=None, fallback=Fallback())  # type: ignore[arg-type]
    answers = await asyncio.gather(*(pool.run(read, key="figures") for _ in range(10)), pool.run(read, key="other"))
    assert answers == [42] * 11 and runs == 2
    assert await pool.run(read, key="figures") == 42 and runs == 3  # not cached: a new question runs again
