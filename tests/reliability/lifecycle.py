"""Drives clients through the lifecycle over HTTP, the way a real agency's staff and clients do,
and checks afterwards that every effect happened exactly once in every service."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import httpx

from tests.reliability.cluster import Cluster
from tests.support import API_KEY

# Every read but health and metrics needs a token now: the harness reads as the bootstrap admin.
ADMIN = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Client:
    lead_id: str
    deal_id: str | None = None
    invoice_id: str | None = None
    paid: Decimal = Decimal(0)
    kind: str | None = None  # the deal's: retainer or project (None: a lead only)
    outcome: str | None = None  # won or lost
    cancelled: bool = False


@dataclass
class Driver:
    cluster: Cluster
    clients: list[Client] = field(default_factory=list)
    accepted: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)
    patience: float = 30.0  # seconds a write is retried while its service is down
    gave_up: list[str] = field(default_factory=list)  # writes still unanswered after `patience`

    async def _post(
        self, http: httpx.AsyncClient, service: str, path: str, body: dict, key: str
    ) -> httpx.Response | None:
        """A write with an Idempotency-Key, retried while the instance is down (as a client would)."""
        deadline = asyncio.get_running_loop().time() + self.patience
        last = "unreachable"
        while asyncio.get_running_loop().time() < deadline:
            try:
                response = await http.post(
                    f"{self.cluster.url(service)}{path}", json=body, headers={"Idempotency-Key": key}
                )
            except (httpx.HTTPError, RuntimeError) as exc:
                last = repr(exc)[:100]
                await asyncio.sleep(0.5)
                continue
            if response.status_code in (409,) and "in progress" in response.text:
                last = "in progress"
                await asyncio.sleep(0.2)
                continue
            if response.status_code == 503 and "retry-after" in response.headers:
                # Busy: nothing was done; come back when told, with the same Idempotency-Key.
                last = "busy"
                await asyncio.sleep(min(float(response.headers["retry-after"]), 2.0))
                continue
            (self.accepted if response.status_code < 400 else self.refused)[f"{service} {path.split('/')[1]}"] += 1
            if response.status_code >= 400:
                self.refusals.append(f"{response.status_code} {path}: {response.text[:200]}")
            return response
        self.gave_up.append(f"{service} {path}: {last}")
        return None

    async def capture_and_sign(self, http: httpx.AsyncClient, n: int) -> Client | None:
        """A new lead that signs a retainer estimate."""
        tag = uuid.uuid4().hex[:10]
        lead = await self._post(
            http,
            "leads",
            "/leads",
            {
                "name": f"Client {n}",
                "email": f"c{n}-{tag}@example.org",
                "channel": "website",
                "consent_marketing": True,
                "budget": "6000",
                "currency": "EUR",
                "brief": "monthly marketing",
            },
            f"lead-{tag}",
        )
        if lead is None or lead.status_code >= 400:
            return None
        client = Client(lead.json()["lead_id"])
        self.clients.append(client)
        deal = await self._post(
            http,
            "leads",
            f"/leads/{client.lead_id}/deals",
            {"title": "Retainer", "kind": "retainer", "currency": "EUR", "monthly_fee": "1000", "included_hours": "10"},
            f"deal-{tag}",
        )
        if deal is None or deal.status_code >= 400:
            return client
        client.deal_id = deal.json()["deal_id"]
        await self._post(http, "leads", f"/deals/{client.deal_id}/won", {"signed_by": f"Client {n}"}, f"won-{tag}")
        return client

    async def pay_deposit(self, http: httpx.AsyncClient, client: Client, *, timeout: float = 120) -> bool:  # noqa: ASYNC109 - the tests' keyword; on expiry the poll returns False instead of raising
        """Pay the deposit invoice once billing has issued it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                invoices = (
                    await http.get(f"{self.cluster.url('billing')}/invoices", params={"lead_id": client.lead_id})
                ).json()
            except (httpx.HTTPError, RuntimeError, ValueError):
                invoices = []
            deposit = next((i for i in invoices if i.get("kind") == "deposit"), None)
            if deposit:
                client.invoice_id = deposit["invoice_id"]
                response = await self._post(
                    http,
                    "billing",
                    "/payments",
                    {
                        "invoice_id": deposit["invoice_id"],
                        "amount": deposit["amount_due"],
                        "currency": "EUR",
                        "method": "bank_transfer",
                    },
                    f"pay-{deposit['invoice_id']}",
                )
                if response is not None and response.status_code < 400:
                    client.paid = Decimal(deposit["amount_due"])
                    return True
                return False
            await asyncio.sleep(0.5)
        return False

    async def live(
        self, http: httpx.AsyncClient, n: int, rng: random.Random, *, deal_share: float = 0.75
    ) -> Client | None:
        """One client's whole life, its path drawn from ``rng`` (one per client, so the mix does
        not depend on scheduling): every lead is captured (welcome e-mail, nurture); a
        ``deal_share`` of them (three in four by default) get an estimate, a retainer or a
        project; four in five of those sign and pay the deposit, the others are lost; about a
        third of the paying retainers cancel."""
        tag = f"{n}-{rng.getrandbits(48):012x}"
        channel = rng.choice(["website", "seo", "content", "social", "paid_ads", "cold_email"])
        lead = await self._post(
            http,
            "leads",
            "/leads",
            {
                "name": f"Client {n}",
                "email": f"c{tag}@example.org",
                "channel": channel,
                "consent_marketing": True,
                "budget": str(rng.choice([3000, 6000, 12000])),
                "currency": "EUR",
                "brief": "marketing for our shop",
            },
            f"lead-{tag}",
        )
        if lead is None or lead.status_code >= 400:
            return None
        client = Client(lead.json()["lead_id"])
        self.clients.append(client)
        if rng.random() >= deal_share:
            return client
        kind = "retainer" if rng.random() < 0.5 else "project"
        deal_body: dict = (
            {"title": "Retainer", "kind": "retainer", "currency": "EUR", "monthly_fee": "1000", "included_hours": "10"}
            if kind == "retainer"
            else {
                "title": "Website",
                "kind": "project",
                "currency": "EUR",
                "lines": [{"description": "Design and build", "hours": "40", "amount": "4000"}],
            }
        )
        deal = await self._post(http, "leads", f"/leads/{client.lead_id}/deals", deal_body, f"deal-{tag}")
        if deal is None or deal.status_code >= 400:
            return client
        client.deal_id, client.kind = deal.json()["deal_id"], kind
        if rng.random() < 0.2:
            lost = await self._post(http, "leads", f"/deals/{client.deal_id}/lost", {"reason": "price"}, f"lost-{tag}")
            if lost is not None and lost.status_code < 400:
                client.outcome = "lost"
            return client
        won = await self._post(
            http, "leads", f"/deals/{client.deal_id}/won", {"signed_by": f"Client {n}"}, f"won-{tag}"
        )
        if won is None or won.status_code >= 400:
            return client
        client.outcome = "won"
        if (
            await self.pay_deposit(http, client, timeout=self.patience * 4)
            and kind == "retainer"
            and rng.random() < 0.35
        ):
            await self.cancel(http, client, timeout=self.patience * 4)
        return client

    async def cancel(self, http: httpx.AsyncClient, client: Client, *, timeout: float = 120) -> bool:  # noqa: ASYNC109 - the tests' keyword; on expiry the poll returns False instead of raising
        """Ask to cancel once retention sees the running subscription, decline the save offer."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                known = await http.get(f"{self.cluster.url('retention')}/clients/{client.lead_id}")
                if known.status_code == 200 and known.json().get("subscription_status") == "active":
                    break
            except (httpx.HTTPError, RuntimeError, ValueError):
                pass
            await asyncio.sleep(1)
        else:
            return False
        asked = await self._post(
            http,
            "retention",
            f"/clients/{client.lead_id}/cancellation",
            {"reason": "budget_cut"},
            f"cancel-{client.lead_id}",
        )
        if asked is None or asked.status_code >= 400:
            return False
        cancellation_id = asked.json()["cancellation_id"]
        confirmed = await self._post(
            http, "retention", f"/cancellations/{cancellation_id}/confirm", {}, f"confirm-{cancellation_id}"
        )
        client.cancelled = confirmed is not None and confirmed.status_code < 400
        return client.cancelled


async def audit(cluster: Cluster, clients: list[Client], *, within: float = 180) -> dict[str, int]:
    """Every effect exactly once, in every service; returns the counts of what is wrong."""
    problems: Counter = Counter()
    async with httpx.AsyncClient(headers=ADMIN, timeout=30) as http:
        deadline = asyncio.get_running_loop().time() + within
        pending = list(clients)
        while pending and asyncio.get_running_loop().time() < deadline:
            still = []
            for client in pending:
                if not await _settled(http, cluster, client):
                    still.append(client)
            pending = still
            if pending:
                await asyncio.sleep(1)
        for client in clients:
            problems.update(await _problems(http, cluster, client))
    problems["unsettled"] = len(pending)
    return dict(problems)


async def _settled(http: httpx.AsyncClient, cluster: Cluster, client: Client) -> bool:
    return not await _problems(http, cluster, client)


async def _problems(http: httpx.AsyncClient, cluster: Cluster, client: Client) -> Counter:
    found: Counter = Counter()
    messages = (await http.get(f"{cluster.url('nurture')}/leads/{client.lead_id}/messages")).json()
    welcome0 = [m for m in messages if m["sequence"] == "welcome" and m["step"] == 0]
    if len(welcome0) != 1:
        found["welcome email sent %s times" % ("more" if len(welcome0) > 1 else "0")] += 1
    if client.deal_id:
        invoices = (await http.get(f"{cluster.url('billing')}/invoices", params={"lead_id": client.lead_id})).json()
        deposits = [i for i in invoices if i.get("kind") == "deposit"]
        if len(deposits) != 1:
            found[f"deposit invoices != 1 ({len(deposits)})"] += 1
        elif client.paid:
            invoice = (await http.get(f"{cluster.url('billing')}/invoices/{deposits[0]['invoice_id']}")).json()
            if Decimal(invoice["amount_paid"]) != client.paid:
                found["payment applied other than once"] += 1
            lead = (await http.get(f"{cluster.url('leads')}/leads/{client.lead_id}")).json()
            if lead["stage"] != "action":
                found["lead not in action after its deposit"] += 1
            response = await http.get(f"{cluster.url('retention')}/clients/{client.lead_id}")
            revenue = (
                sum(Decimal(r["amount"]) for r in response.json().get("revenue", []))
                if response.status_code == 200
                else 0
            )
            if revenue != client.paid:
                found["retention revenue differs from payments"] += 1
    return found


@dataclass
class _Snapshot:
    """What the list endpoints say, fetched in pages: leads, invoices and subscriptions by lead."""

    leads: dict[str, dict]
    invoices: dict[str, list[dict]]
    subscriptions: dict[str, list[dict]]


async def _pages(http: httpx.AsyncClient, url: str, *, items: str | None = None, page: int = 500) -> list[dict]:
    found: list[dict] = []
    while True:
        body = (await http.get(url, params={"limit": page, "offset": len(found)})).json()
        batch = body[items] if items else body
        found += batch
        if len(batch) < page:
            return found


async def _snapshot(http: httpx.AsyncClient, cluster: Cluster) -> _Snapshot:
    leads, invoices, subscriptions = await asyncio.gather(
        _pages(http, f"{cluster.url('leads')}/leads", items="items"),
        _pages(http, f"{cluster.url('billing')}/invoices"),
        http.get(f"{cluster.url('billing')}/subscriptions"),
    )
    by_lead: dict[str, list[dict]] = {}
    for invoice in invoices:
        by_lead.setdefault(invoice["lead_id"], []).append(invoice)
    subs: dict[str, list[dict]] = {}
    for subscription in subscriptions.json():
        subs.setdefault(subscription["lead_id"], []).append(subscription)
    return _Snapshot({lead["lead_id"]: lead for lead in leads}, by_lead, subs)


def _expected_stage(client: Client) -> tuple[str, ...]:
    if client.cancelled:
        return ("churned",)
    if client.paid:
        return ("action",)
    if client.deal_id:
        return ("decision",)
    return ("awareness", "interest", "consideration")


async def _client_problems(http: httpx.AsyncClient, cluster: Cluster, snap: _Snapshot, client: Client) -> Counter:
    """Everything one client should have caused, in every service, exactly once."""
    found: Counter = Counter()
    lead = snap.leads.get(client.lead_id)
    if lead is None:
        found["lead missing in leads"] += 1
    elif lead["stage"] not in _expected_stage(client):
        found[f"lead in stage {lead['stage']}, expected {'/'.join(_expected_stage(client))}"] += 1
    answer = await http.get(f"{cluster.url('nurture')}/leads/{client.lead_id}/messages")
    if answer.status_code != 200:  # a service still starting after its last kill: look again
        found[f"nurture answered {answer.status_code}"] += 1
        return found
    messages = answer.json()
    steps = Counter((m["sequence"], m["step"]) for m in messages)
    if steps[("welcome", 0)] == 0:
        found["welcome email not sent"] += 1
    # Sequences that start again per invoice send each step once per invoice; the others once.
    invoices = len(snap.invoices.get(client.lead_id, []))
    for (sequence, step), count in steps.items():
        if count > (invoices if sequence in ("invoice_reminders", "payment_failed") else 1):
            found[f"email {sequence}/{step} sent more than once"] += 1
    deposits = [i for i in snap.invoices.get(client.lead_id, []) if i["kind"] == "deposit"]
    if len(deposits) != (1 if client.outcome == "won" else 0):
        found[f"deposit invoices {len(deposits)} for a deal {client.outcome or 'never proposed'}"] += 1
    if (
        client.paid
        and len(deposits) == 1
        and (Decimal(deposits[0]["amount_paid"]) != client.paid or len(deposits[0]["payments"]) != 1)
    ):
        found["payment applied other than once in billing"] += 1
    subscriptions = snap.subscriptions.get(client.lead_id, [])
    if len(subscriptions) != (1 if client.outcome == "won" and client.kind == "retainer" else 0):
        found[f"{len(subscriptions)} subscriptions for a {client.outcome} {client.kind}"] += 1
    elif client.paid and subscriptions:
        status = subscriptions[0]["status"]
        if status != ("cancelled" if client.cancelled else "active"):
            found[f"subscription {status} (cancelled: {client.cancelled})"] += 1
    if client.paid:
        response = await http.get(f"{cluster.url('retention')}/clients/{client.lead_id}")
        body = response.json() if response.status_code == 200 else {}
        revenue = sum(Decimal(r["amount"]) for r in body.get("revenue", []))
        if revenue != client.paid:
            found["retention revenue differs from payments"] += 1
        if client.cancelled and body.get("subscription_status") != "cancelled":
            found["cancelled client not cancelled in retention"] += 1
    return +found  # only what is wrong (drops the zero counts)


async def audit_lifecycle(
    cluster: Cluster,
    clients: list[Client],
    *,
    timeout: float = 300,  # noqa: ASYNC109 - the tests' keyword; on expiry the unsettled are counted, not raised
    concurrency: int = 12,
) -> tuple[dict[str, int], float]:
    """`audit` for the whole mix, over the list endpoints where there are some and per client
    (bounded concurrency) where not. Polls until every client is settled, then checks every
    client once more and the totals (no lead, invoice or subscription nobody asked for).
    Returns the counts of what is wrong and the seconds it took to settle."""
    problems: Counter = Counter()
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def check(http: httpx.AsyncClient, snap: _Snapshot, client: Client) -> Counter:
        async with gate:
            for attempt in range(5):  # an instance may be restarting under the audit
                try:
                    return await _client_problems(http, cluster, snap, client)
                except (httpx.HTTPError, RuntimeError, ValueError):
                    await asyncio.sleep(1 + attempt)
            return Counter({"not auditable (service unreachable)": 1})

    async with httpx.AsyncClient(headers=ADMIN, timeout=60) as http:
        pending = list(clients)
        while True:
            snap = await _snapshot(http, cluster)
            found = await asyncio.gather(*(check(http, snap, c) for c in pending))
            pending = [c for c, f in zip(pending, found, strict=True) if f]
            if not pending or loop.time() - started > timeout:
                break
            await asyncio.sleep(2)
        settled = loop.time() - started
        snap = await _snapshot(http, cluster)
        for found in await asyncio.gather(*(check(http, snap, c) for c in clients)):
            problems.update(found)
    known = {c.lead_id for c in clients}
    problems["leads nobody captured"] = len(set(snap.leads) - known)
    problems["invoices of leads nobody captured"] = len(set(snap.invoices) - known)
    problems["unsettled"] = len(pending)
    return {k: v for k, v in problems.items() if v or k == "unsettled"}, settled


def load_figures(driver: Driver, *, load_s: float, caught_up: float, problems: dict[str, int]) -> dict[str, object]:
    """The report's figures every load scenario shares: how long, what the writes got, how long
    the services took to catch up, and what the audit found wrong."""
    return {
        "load duration (s)": round(load_s, 1),
        "HTTP writes accepted / refused / given up": (
            f"{sum(driver.accepted.values())} / {sum(driver.refused.values())} / {len(driver.gave_up)}"
        ),
        "time to catch up, end of load to audit passing (s)": round(caught_up, 1),
        "lost or duplicated effects": sum(problems.values()),
    }
