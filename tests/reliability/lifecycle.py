"""Drives clients through the lifecycle over HTTP, the way a real agency's staff and clients do,
and checks afterwards that every effect happened exactly once in every service."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import httpx

from tests.reliability.cluster import Cluster


@dataclass
class Client:
    lead_id: str
    deal_id: str | None = None
    invoice_id: str | None = None
    paid: Decimal = Decimal(0)


@dataclass
class Driver:
    cluster: Cluster
    clients: list[Client] = field(default_factory=list)
    accepted: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)

    async def _post(self, http: httpx.AsyncClient, service: str, path: str, body: dict, key: str) -> httpx.Response | None:
        """A write with an Idempotency-Key, retried while the instance is down (as a client would)."""
        for _ in range(60):
            try:
                response = await http.post(
                    f"{self.cluster.url(service)}{path}", json=body, headers={"Idempotency-Key": key}
                )
            except (httpx.HTTPError, RuntimeError):
                await asyncio.sleep(0.5)
                continue
            if response.status_code in (409,) and "in progress" in response.text:
                await asyncio.sleep(0.2)
                continue
            (self.accepted if response.status_code < 400 else self.refused)[f"{service} {path.split('/')[1]}"] += 1
            if response.status_code >= 400:
                self.refusals.append(f"{response.status_code} {path}: {response.text[:200]}")
            return response
        return None

    async def capture_and_sign(self, http: httpx.AsyncClient, n: int) -> Client | None:
        """A new lead that signs a retainer estimate."""
        tag = uuid.uuid4().hex[:10]
        lead = await self._post(
            http,
            "leads",
            "/leads",
            {"name": f"Client {n}", "email": f"c{n}-{tag}@example.org", "channel": "website", "consent_marketing": True,
             "budget": "6000", "currency": "EUR", "brief": "monthly marketing"},
            f"lead-{tag}",
        )
        if lead is None or lead.status_code >= 400:
            return None
        client = Client(lead.json()["lead_id"])
        self.clients.append(client)
        deal = await self._post(
            http, "leads", f"/leads/{client.lead_id}/deals",
            {"title": "Retainer", "kind": "retainer", "currency": "EUR", "monthly_fee": "1000", "included_hours": "10"},
            f"deal-{tag}",
        )
        if deal is None or deal.status_code >= 400:
            return client
        client.deal_id = deal.json()["deal_id"]
        await self._post(http, "leads", f"/deals/{client.deal_id}/won", {"signed_by": f"Client {n}"}, f"won-{tag}")
        return client

    async def pay_deposit(self, http: httpx.AsyncClient, client: Client, *, timeout: float = 120) -> bool:
        """Pay the deposit invoice once billing has issued it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                invoices = (await http.get(f"{self.cluster.url('billing')}/invoices", params={"lead_id": client.lead_id})).json()
            except (httpx.HTTPError, RuntimeError, ValueError):
                invoices = []
            deposit = next((i for i in invoices if i.get("kind") == "deposit"), None)
            if deposit:
                client.invoice_id = deposit["invoice_id"]
                response = await self._post(
                    http, "billing", "/payments",
                    {"invoice_id": deposit["invoice_id"], "amount": deposit["amount_due"], "currency": "EUR", "method": "bank_transfer"},
                    f"pay-{deposit['invoice_id']}",
                )
                if response is not None and response.status_code < 400:
                    client.paid = Decimal(deposit["amount_due"])
                    return True
                return False
            await asyncio.sleep(0.5)
        return False


async def audit(cluster: Cluster, clients: list[Client], *, timeout: float = 180) -> dict[str, int]:
    """Every effect exactly once, in every service; returns the counts of what is wrong."""
    problems: Counter = Counter()
    async with httpx.AsyncClient(timeout=30) as http:
        deadline = asyncio.get_running_loop().time() + timeout
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
            revenue = sum(Decimal(r["amount"]) for r in response.json().get("revenue", [])) if response.status_code == 200 else 0
            if revenue != client.paid:
                found["retention revenue differs from payments"] += 1
    return found
