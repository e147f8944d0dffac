"""Scenario 6: intruders. Against a cluster of real processes, with a client who has signed and
paid (so every write would have an effect): every write endpoint of every service (taken from
the live OpenAPI documents) without a key and with a wrong one, forged and replayed payment
webhooks, forged and guessed tracking and unsubscribe tokens, SQL and template injection in
every text field, bodies over the limit. Each refused attempt is proven harmless by a digest of
every row of every table of the four databases, taken before and after it; each injected text
must come back verbatim and render as text in the email."""

from __future__ import annotations

import asyncio
import email
import hashlib
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.billing.domain import SIGNATURE_HEADER, sign
from services.nurture import domain as nurture
from tests.reliability.cluster import SERVICES, Cluster
from tests.reliability.lifecycle import Driver
from tests.support import API_KEY

pytestmark = pytest.mark.reliability

SECRET_KEY = "intruders-secret-" + "s" * 32
WEBHOOK_SECRET = "intruders-webhook-" + "w" * 32
INJECTIONS = [
    "'; DROP TABLE leads;--",
    "\" OR 1=1 --",
    "Robert'); DELETE FROM invoices; --",
    "{{7*7}}",
    "{% for x in range(3) %}x{% endfor %}",
    "${7*7}",
    "#{7*7} <%= 7*7 %> {{config.items()}}",
    "<script>alert(1)</script>",
]
MAX_BODY = 1_048_576


class Stores:
    """Reads every row of every table of the services' databases."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.engines = {s: create_async_engine(url, poolclass=NullPool) for s, url in urls.items()}

    async def tables(self, service: str) -> list[str]:
        async with self.engines[service].connect() as conn:
            return sorted(await conn.run_sync(lambda c: inspect(c).get_table_names()))

    async def digest(self) -> str:
        h = hashlib.sha256()
        for service in SERVICES:
            async with self.engines[service].connect() as conn:
                for table in await conn.run_sync(lambda c: sorted(inspect(c).get_table_names())):
                    rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
                    h.update(f"{service}.{table}:{sorted(map(repr, rows))}".encode())
        return h.hexdigest()

    async def count(self, service: str, table: str) -> int:
        async with self.engines[service].connect() as conn:
            return (await conn.execute(text(f'SELECT count(*) FROM "{table}"'))).scalar_one()

    async def settle(self, timeout: float = 60) -> str:
        """The digest once nothing moves any more (events in flight have all been applied)."""
        deadline = time.monotonic() + timeout
        last = await self.digest()
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            now = await self.digest()
            if now == last:
                return now
            last = now
        raise TimeoutError("the databases never settled")

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.dispose()


async def poll(probe: Callable[[], Awaitable[Any]], *, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = await probe()
        except (httpx.HTTPError, ValueError, KeyError):
            found = None
        if found:
            return found
        await asyncio.sleep(0.3)
    raise TimeoutError(f"not in {timeout}s: {what}")


def daytime_zone() -> str:
    """A time zone where it is now about noon, so no quiet hours hold the welcome email back."""
    offset = max(-12, min(14, 12 - datetime.now(UTC).hour))
    # POSIX sign: Etc/GMT-3 is three hours ahead of UTC.
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


class Attempts:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.rows: list[tuple[str, str, str]] = []
        self.grouped: dict[str, Counter] = {}
        self.problems: list[str] = []

    async def refused(self, label: str, send: Callable[[], Awaitable[httpx.Response]], expect: int, *, group: str | None = None) -> None:
        """One hostile request: it must get ``expect`` and leave every table as it was."""
        before = await self.stores.digest()
        response = await send()
        after = await self.stores.digest()
        changed = "yes" if after != before else "no"
        if response.status_code != expect or changed != "no":
            self.problems.append(f"{label}: {response.status_code} (want {expect}), changed: {changed}; {response.text[:200]}")
        if group is None:
            self.rows.append((label, str(response.status_code), changed))
        else:
            self.grouped.setdefault(group, Counter())[(response.status_code, changed)] += 1


def fill_path(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no id for {path}"
    return path


async def test_intruders(tmp_path, databases, report, monkeypatch) -> None:
    monkeypatch.setenv("CLIENTFLOW_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("BILLING_WEBHOOK_SECRET", WEBHOOK_SECRET)
    cluster = Cluster(tmp_path, databases)
    await cluster.start()
    stores = Stores(databases)
    started = time.monotonic()
    try:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(timeout=30) as anon, httpx.AsyncClient(headers=auth, timeout=30) as http:
            url = {s: cluster.url(s) for s in SERVICES}
            driver = Driver(cluster)
            client = await driver.capture_and_sign(http, 0)
            assert client is not None and client.deal_id is not None
            assert await driver.pay_deposit(http, client)
            lead, deal, invoice = client.lead_id, client.deal_id, client.invoice_id
            messages = await poll(
                lambda: _json_list(anon.get(f"{url['nurture']}/leads/{lead}/messages")), what="the welcome email"
            )
            subscription = (await poll(
                lambda: _json_list(http.get(f"{url['billing']}/subscriptions", params={"lead_id": lead})),
                what="the retainer subscription",
            ))[0]["subscription_id"]
            await poll(lambda: _ok(anon.get(f"{url['retention']}/clients/{lead}")), what="retention's client")
            sequence = (await anon.get(f"{url['nurture']}/sequences")).json()[0]["name"]
            ids = {
                "lead_id": lead, "deal_id": deal, "invoice_id": invoice, "subscription_id": subscription,
                "cancellation_id": str(uuid.uuid4()), "request_id": str(uuid.uuid4()), "task_id": str(uuid.uuid4()),
                "channel": "website", "name": sequence,
            }
            await stores.settle()
            attempts = Attempts(stores)

            # 1. Every write endpoint without a key and with a wrong one.
            writes = 0
            for service in SERVICES:
                document = (await anon.get(f"{url[service]}/openapi.json")).json()
                for path, operations in document["paths"].items():
                    for method, operation in operations.items():
                        if method.upper() not in {"POST", "PUT", "PATCH", "DELETE"} or "401" not in operation["responses"]:
                            continue
                        writes += 1
                        target = f"{url[service]}{fill_path(path, ids)}"
                        body = json.dumps(WRITE_BODIES.get((method.upper(), path), {}) | {"lead_id": lead})
                        for variant, headers in (
                            ("no key", {}),
                            ("wrong key", {"Authorization": "Bearer " + secrets.token_hex(24)}),
                            ("key as Basic", {"Authorization": f"Basic {API_KEY}"}),
                        ):
                            await attempts.refused(
                                f"{service} {method.upper()} {path} ({variant})",
                                lambda: anon.request(method.upper(), target, content=body,
                                                     headers=headers | {"content-type": "application/json"}),
                                401,
                                group=f"{service}: every write endpoint ({variant})",
                            )

            # 2. Payment webhooks: forged, tampered, replayed.
            hook = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "payment.succeeded",
                               "data": {"invoice_id": invoice, "amount": "1.00", "currency": "EUR"}}).encode()
            now = int(time.time())
            webhook_url = f"{url['billing']}/payments/webhook"

            def post_hook(body: bytes, signature: str | None) -> Callable[[], Awaitable[httpx.Response]]:
                headers = {"content-type": "application/json"} | ({SIGNATURE_HEADER: signature} if signature else {})
                return lambda: anon.post(webhook_url, content=body, headers=headers)

            tampered = hook.replace(b'"1.00"', b'"9999.00"')
            for label, send in (
                ("webhook without a signature", post_hook(hook, None)),
                ("webhook signed with a wrong secret", post_hook(hook, sign(body=hook, secret="guess", timestamp=now))),
                ("webhook with a made-up v1", post_hook(hook, f"t={now},v1={secrets.token_hex(32)}")),
                ("webhook body tampered after signing", post_hook(tampered, sign(body=hook, secret=WEBHOOK_SECRET, timestamp=now))),
                ("webhook replayed (validly signed 1 h ago)", post_hook(hook, sign(body=hook, secret=WEBHOOK_SECRET, timestamp=now - 3600))),
                ("webhook signed 1 h in the future", post_hook(hook, sign(body=hook, secret=WEBHOOK_SECRET, timestamp=now + 3600))),
                ("webhook with a garbage signature header", post_hook(hook, "t=abc,v1=")),
            ):
                await attempts.refused(label, send, 400)

            # 3. Tracking and unsubscribe tokens: guessed, forged, used for another purpose or target.
            message_id = uuid.UUID(messages[0]["message_id"])
            nurture_url = url["nurture"]
            forged = nurture.message_token("not-the-secret", "open", message_id)
            guessed = f"{message_id.hex}.{secrets.token_urlsafe(32)}"
            click_for_a = nurture.message_token(SECRET_KEY, "click", message_id, "https://example.org/a")
            unsub_forged = nurture.unsubscribe_token("not-the-secret", uuid.UUID(lead))
            unsub_guessed = f"{uuid.UUID(lead).hex}.{secrets.token_urlsafe(32)}"
            for label, send in (
                ("open pixel, guessed token", lambda: anon.get(f"{nurture_url}/t/o/{guessed}.gif")),
                ("open pixel, token signed with a wrong secret", lambda: anon.get(f"{nurture_url}/t/o/{forged}.gif")),
                ("open pixel, a click token", lambda: anon.get(f"{nurture_url}/t/o/{click_for_a}.gif")),
                ("open pixel, bare message id", lambda: anon.get(f"{nurture_url}/t/o/{message_id.hex}.gif")),
                ("click, guessed token", lambda: anon.get(f"{nurture_url}/t/c/{guessed}", params={"u": "https://example.org/a"})),
                ("click, valid token pointed elsewhere (open redirect)",
                 lambda: anon.get(f"{nurture_url}/t/c/{click_for_a}", params={"u": "https://evil.example/"})),
                ("click, token signed with a wrong secret",
                 lambda: anon.get(f"{nurture_url}/t/c/{nurture.message_token('x', 'click', message_id, 'https://example.org/a')}",
                                  params={"u": "https://example.org/a"})),
                ("unsubscribe, guessed token", lambda: anon.post(f"{nurture_url}/unsubscribe", params={"token": unsub_guessed})),
                ("unsubscribe, token signed with a wrong secret",
                 lambda: anon.post(f"{nurture_url}/unsubscribe", params={"token": unsub_forged})),
                ("unsubscribe, an open token", lambda: anon.post(f"{nurture_url}/unsubscribe", params={"token": forged})),
                ("unsubscribe page, forged token", lambda: anon.get(f"{nurture_url}/unsubscribe", params={"token": unsub_forged})),
                ("survey answer, guessed token",
                 lambda: anon.post(f"{nurture_url}/feedback", json={"token": guessed, "score": 0, "comment": "forged"})),
                ("survey click, guessed token", lambda: anon.get(f"{nurture_url}/survey/{guessed}", params={"score": 0})),
            ):
                await attempts.refused(label, send, 404)

            # 4. Bodies over the limit, announced and streamed (no Content-Length).
            big = json.dumps({"name": "x" * (MAX_BODY + 1024), "email": "big@example.org", "channel": "website"})

            async def streamed() -> Any:
                for _ in range(MAX_BODY // 65536 + 2):
                    yield b" " * 65536

            for service, path in (("leads", "/leads"), ("nurture", f"/sequences/{sequence}"), ("billing", "/payments"),
                                  ("retention", "/referrals")):
                method = "PUT" if service == "nurture" else "POST"
                await attempts.refused(
                    f"{service} {method} {path}, {len(big) // 1024} KiB body",
                    lambda: http.request(method, f"{url[service]}{path}", content=big,
                                         headers={"content-type": "application/json"}),
                    413,
                )
                await attempts.refused(
                    f"{service} {method} {path}, chunked body past the limit",
                    lambda: http.request(method, f"{url[service]}{path}", content=streamed(),
                                         headers={"content-type": "application/json"}),
                    413,
                )

            assert not attempts.problems, "\n".join(attempts.problems)

            # 5. SQL and template injection in every text field: stored verbatim, never run.
            tables_before = {s: await stores.tables(s) for s in SERVICES}
            injected = await inject_everywhere(http, anon, url, lead, deal, subscription, invoice, tmp_path, stores)
            tables_after = {s: await stores.tables(s) for s in SERVICES}
            assert tables_after == tables_before
            assert await stores.count("leads", "leads") >= 1 + len(INJECTIONS)

            # The controls: the same doors open with the right key, signature and token, so the
            # refusals above are the guards at work, not broken endpoints.
            before = await stores.digest()
            signed = sign(body=hook, secret=WEBHOOK_SECRET, timestamp=int(time.time()))
            assert (await post_hook(hook, signed)()).status_code == 200
            valid_open = nurture.message_token(SECRET_KEY, "open", message_id)
            assert (await anon.get(f"{nurture_url}/t/o/{valid_open}.gif")).status_code == 200
            assert await stores.digest() != before
        elapsed = time.monotonic() - started
    finally:
        await stores.close()
        await cluster.stop()

    figures: dict[str, object] = {}
    for group, outcomes in attempts.grouped.items():
        figures[group] = ", ".join(f"{n} x {status}, changed: {changed}" for (status, changed), n in outcomes.items())
    for label, status, changed in attempts.rows:
        figures[label] = f"{status}, changed: {changed}"
    for label, outcome in injected.items():
        figures[label] = outcome
    figures["write endpoints found in the OpenAPI documents"] = writes
    figures["refused attempts, all proven harmless by a digest of every table"] = (
        len(attempts.rows) + sum(sum(c.values()) for c in attempts.grouped.values())
    )
    figures["time (s)"] = round(elapsed, 1)
    report.add("Intruders (auth, signatures, tokens, injection, oversized bodies)", figures)


WRITE_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/leads"): {"name": "Mallory", "email": "mallory@example.org", "channel": "website"},
    ("POST", "/leads/{lead_id}/deals"): {"title": "Free work", "kind": "project", "currency": "EUR",
                                         "lines": [{"description": "all of it", "amount": "1"}]},
    ("POST", "/deals/{deal_id}/won"): {"signed_by": "Mallory"},
    ("POST", "/deals/{deal_id}/lost"): {"reason": "sabotage"},
    ("POST", "/payments"): {"amount": "1.00", "currency": "EUR"},
    ("POST", "/clients/{lead_id}/cancellation"): {"reason": "price"},
    ("POST", "/referrals"): {"name": "Eve", "email": "eve@example.org"},
    ("POST", "/feedback"): {"survey": "onboarding", "score": 0, "comment": "forged"},
    ("POST", "/leads/{lead_id}/takeover"): {"by": "mallory"},
}


async def _json_list(request: Awaitable[httpx.Response]) -> list[dict[str, Any]] | None:
    response = await request
    return response.json() if response.status_code == 200 and response.json() else None


async def _ok(request: Awaitable[httpx.Response]) -> bool:
    return (await request).status_code == 200


def _parts(path: Path) -> tuple[str, str]:
    """The text and HTML parts of an email file."""
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    plain, rich = message.get_body(preferencelist=("plain",)), message.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    return plain.get_content(), rich.get_content()


async def inject_everywhere(
    http: httpx.AsyncClient, anon: httpx.AsyncClient, url: dict[str, str], lead: str, deal: str, subscription: str,
    invoice: str, workdir: Path, stores: Stores,
) -> dict[str, str]:
    """Each hostile string in every text field of a lead, a deal, its lines, a change request, a
    red flag, a takeover, feedback, a payment, a time entry and a cancellation; read back."""
    outcome: dict[str, str] = {}
    statuses: Counter = Counter()
    zone = daytime_zone()

    async def write(service: str, method: str, path: str, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        response = await http.request(method, f"{url[service]}{path}", json=body, **kw)
        statuses[response.status_code] += 1
        assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text[:300]}"
        return response

    fields = ("name", "company", "job_title", "industry", "campaign", "brief", "timeline", "legal_basis")
    created = []
    for n, payload in enumerate(INJECTIONS):
        body = {field: payload for field in fields} | {
            # The first word is what the welcome email greets: the template syntax comes first.
            "name": f"{payload} Tester",
            # A domain of its own: leads at one company with names alike are merged as one person.
            "email": f"inj{n}@inj{n}-{uuid.uuid4().hex[:8]}.example.org", "channel": "website", "consent_marketing": True,
            "timezone": zone, "utm": {"source": payload, payload: "x"}, "needs": [payload],
        }
        lead_id = (await write("leads", "POST", "/leads", body)).json()["lead_id"]
        created.append((lead_id, payload, body["email"]))
        stored = (await http.get(f"{url['leads']}/leads/{lead_id}")).json()
        assert stored["name"] == f"{payload} Tester"
        assert all(stored[f] == payload for f in ("company", "job_title", "industry", "campaign", "brief", "legal_basis"))
        assert stored["timeline_text"] == payload and stored["needs"] == [payload] and stored["utm"]["source"] == payload
        found = (await http.get(f"{url['leads']}/leads", params={"q": payload})).json()
        assert lead_id in [item["lead_id"] for item in found["items"]], "search by the hostile text finds it verbatim"
    outcome["SQL/template injection in 11 lead fields x " + str(len(INJECTIONS)) + " strings"] = "stored verbatim, searchable, changed: no"

    for (hostile_lead, _, _), payload in zip(created, INJECTIONS, strict=True):
        deal_id = (await write("leads", "POST", f"/leads/{lead}/deals", {
            "title": payload, "kind": "project", "currency": "EUR",
            "lines": [{"description": payload, "hours": "1", "amount": "100"}],
        })).json()["deal_id"]
        stored = (await http.get(f"{url['leads']}/deals/{deal_id}")).json()
        assert stored["title"] == payload and stored["lines"][0]["description"] == payload
        await write("leads", "POST", f"/deals/{deal_id}/lost", {"reason": payload})
        assert (await http.get(f"{url['leads']}/deals/{deal_id}")).json()["lost_reason"] == payload
        change = (await write("leads", "POST", f"/deals/{deal}/change-requests", {"description": payload, "amount": "100"})).json()
        assert change["description"] == payload
        flagged = (await write("leads", "POST", f"/leads/{hostile_lead}/red-flags",
                               {"name": "refuses_deposit", "evidence": payload})).json()
        assert [f["evidence"] for f in flagged["red_flags"] if f["name"] == "refuses_deposit"] == [payload]
        taken = (await write("nurture", "POST", f"/leads/{lead}/takeover", {"by": payload, "reason": payload})).json()
        assert taken["by"] == payload
        await write("nurture", "DELETE", f"/leads/{lead}/takeover")
        answer = (await write("nurture", "POST", "/feedback",
                              {"lead_id": lead, "survey": "onboarding", "score": 9, "comment": payload})).json()
        assert answer["comment"] == payload
        await write("billing", "POST", "/time-entries", {"subscription_id": subscription, "hours": "0.5", "description": payload})
        paid = (await write("billing", "POST", "/payments",
                            {"invoice_id": invoice, "amount": "0.01", "currency": "EUR", "method": "bank_transfer",
                             "reference": payload}))
        assert paid.json()["reference"] == payload
    async with stores.engines["billing"].connect() as conn:
        descriptions = set((await conn.execute(text("SELECT description FROM time_entries"))).scalars())
    assert set(INJECTIONS) <= descriptions, "time entries keep their descriptions verbatim"
    outcome["SQL/template injection in deal, line, lost reason, change request, red flag, takeover, feedback, time entry, payment reference"] = (
        f"{sum(statuses.values())} writes, {dict(statuses)}, stored verbatim, changed: no"
    )

    async def cancel() -> httpx.Response | None:
        response = await http.post(f"{url['retention']}/clients/{lead}/cancellation",
                                   json={"reason": "other", "comment": INJECTIONS[0] + " " + INJECTIONS[3]})
        return response if response.status_code == 201 else None  # 409 until retention has the subscription

    cancellation = (await poll(cancel, what="a cancellation request")).json()
    stored = (await http.get(f"{url['retention']}/cancellations/{cancellation['cancellation_id']}")).json()
    assert stored["comment"] == INJECTIONS[0] + " " + INJECTIONS[3]
    outcome["injection in a cancellation comment"] = "stored verbatim, changed: no"

    # The welcome email of each hostile lead greets the text, not its evaluation.
    mail = workdir / "mail"
    for lead_id, payload, address in created:
        messages = await poll(lambda lead_id=lead_id: _json_list(anon.get(f"{url['nurture']}/leads/{lead_id}/messages")),
                              what=f"the welcome email of {address}")
        path = await poll(lambda m=messages[0]["message_id"]: _file(mail, m), what="the email file")
        plain, rich = _parts(path)
        greeting = f"Hello {nurture.first_name(payload + ' Tester')},"
        assert greeting in plain, (greeting, plain[:300])
        assert "Hello 49" not in plain and "Hello xxx" not in plain, plain[:300]
        assert "<script>" not in rich, "the HTML part escapes the name"
    outcome["welcome emails rendered for the hostile names"] = f"{len(created)}: greet the text verbatim (no 49), HTML escaped"
    return outcome


async def _file(mail: Path, message_id: str) -> Path | None:
    found = list(mail.rglob(f"{message_id}.eml"))
    return found[0] if found else None
