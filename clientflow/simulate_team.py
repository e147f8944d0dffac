"""The simulated agency's sales department: three reps (one speaks Bengali) and an account
owner, a commission plan and monthly quotas; each rep calls the leads they are given, and at the
end their figures are printed and checked against billing.

Two of the cross-service checks live here: every lead has an owner (nobody is left in the
pool), and each rep's commission is the plan applied to what billing says their clients paid
(deposits, and the other invoices of the first year after the win), month by month."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
from rich.table import Table

from services.leads.domain.commission import CommissionPlan, Paid, commission

# Idle connections are dropped before the services close them (CLIENTFLOW_HTTP_KEEP_ALIVE_S, 5 s):
# a request sent on a connection the server is closing at that moment fails with a ReadError.
LIMITS = httpx.Limits(keepalive_expiry=2.0)

if TYPE_CHECKING:
    from clientflow.simulate import Driver

# name, role, languages, capacity
TEAM = (
    ("Rina", "sales", ["en"], 2),
    ("Arif", "sales", ["bn", "en"], 1),
    ("Tom", "sales", ["en"], 1),
    ("Sara", "success", ["en"], 1),
)
PLAN = {"deposit_share": "0.10", "first_year_share": "0.05", "monthly_cap": "4000"}
QUOTA = "15000"


class SalesTeam:
    def __init__(self, driver: Driver, *, tag: str, currency: str) -> None:
        self.driver = driver
        self.tag = tag
        self.currency = currency
        self.reps: dict[str, tuple[str, httpx.AsyncClient]] = {}  # person id -> (name, their client)

    async def close(self) -> None:
        for _, client in self.reps.values():
            await client.aclose()

    async def set_up(self, months: list[str]) -> None:
        """Add the people (a re-run finds them and gives each a new token), the plan and quotas."""
        d = self.driver
        for name, role, languages, capacity in TEAM:
            email = f"{name.lower()}.{self.tag}@agency.example"
            made = await d.call(
                "leads", "POST", "/people", json={"email": email, "name": name, "role": role, "languages": languages}
            )
            if made.status_code == 201:
                person_id, token = made.json()["person_id"], made.json()["token"]["token"]
            else:
                token_answer = await d.call("leads", "POST", f"/people/{email}/tokens", json={})
                person_id, token = token_answer.json()["person_id"], token_answer.json()["token"]
            await d.call("leads", "PUT", f"/team/reps/{person_id}", json={"capacity": capacity})
            client = httpx.AsyncClient(
                base_url=d.targets.urls()["leads"],
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
                limits=LIMITS,
            )
            self.reps[person_id] = (name, client)
        await d.call("leads", "PUT", "/team/commission-plan", json={"currency": self.currency, **PLAN})
        quotas = [
            {"person_id": pid, "month": month, "amount": QUOTA, "currency": self.currency}
            for pid, (name, _) in self.reps.items()
            if name != "Sara"
            for month in months
        ]
        answer = await d.call("leads", "PUT", "/team/quotas", json={"quotas": quotas})
        if answer.status_code != 200:
            d.problems.append(f"quotas refused: {answer.status_code} {answer.text[:200]}")

    async def touch(self, lead_id: str, key: str) -> None:
        """The lead's owner calls them the day they arrive (the first touch)."""
        owner = (await self.driver.call("leads", "GET", f"/leads/{lead_id}")).json().get("owner_id")
        if owner not in self.reps:
            return
        _, client = self.reps[owner]
        answer = await client.post(
            f"/leads/{lead_id}/activities",
            json={"kind": "call", "outcome": "introduced ourselves"},
            headers={"Idempotency-Key": str(uuid.uuid5(uuid.NAMESPACE_URL, f"clientflow-simulate:{key}:touch"))},
        )
        self.driver.counts["first_touch" if answer.status_code == 201 else "first_touch_refused"] += 1

    async def figures(self, since: date, until: date) -> dict[str, Any]:
        answer = await self.driver.call(
            "leads", "GET", "/team/performance", params={"from": since.isoformat(), "to": until.isoformat()}
        )
        return answer.json()

    def table(self, figures: dict[str, Any]) -> Table:
        table = Table(title=f"The sales team {figures['from']} to {figures['to']} (leads GET /team/performance)")
        for column in (
            "rep",
            "leads",
            "first touch (h)",
            "qualified",
            "win rate",
            "won",
            "deposits",
            "year-one revenue",
            "attainment",
            "commission",
        ):
            table.add_column(column, justify="left" if column == "rep" else "right")

        def money(items: list[dict[str, str]]) -> str:
            return ", ".join(f"{Decimal(m['amount']):,.0f} {m['currency']}" for m in items) or "-"

        def share(value: Any) -> str:
            return "-" if value is None else f"{float(value):.0%}"

        for rep in figures["reps"]:
            if rep["person_id"] not in self.reps:
                continue
            table.add_row(
                f"{rep['name']} ({rep['role']})",
                str(rep["leads_owned"]),
                "-" if rep["first_touch_median_hours"] is None else f"{rep['first_touch_median_hours']:.1f}",
                share(rep["qualification_rate"]),
                share(rep["win_rate"]),
                money(rep["won_value"]),
                money(rep["deposits_cleared"]),
                money(rep["first_year_revenue"]),
                share(rep["attainment"]),
                money([rep["commission"]] if rep["commission"] else []),
            )
        return table

    async def checks(self, since: date, until: date) -> list[tuple[str, int, list[str]]]:
        d = self.driver
        pool = (await d.call("leads", "GET", "/leads", params={"owner": "none", "limit": 20})).json()
        everyone = (await d.call("leads", "GET", "/leads", params={"limit": 1})).json()
        pool_failures = [f"lead {item['lead_id']} has no owner" for item in pool["items"]]

        # What billing says each rep's clients paid, with when the client was won.
        figures = await self.figures(since, until)
        plan = CommissionPlan.model_validate(figures["plan"]) if figures.get("plan") else None
        paid: dict[str, list[Paid]] = defaultdict(list)
        for lead_id in {p.lead_id for p in d.people.values() if p.won and p.lead_id}:
            wins = [
                (datetime.fromisoformat(deal["signed_at"]), deal.get("owner_id"))
                for deal_id in (await d.call("leads", "GET", f"/leads/{lead_id}")).json().get("deals", [])
                for deal in [(await d.call("leads", "GET", f"/deals/{deal_id}")).json()]
                if deal.get("status") == "won" and deal.get("signed_at")
            ]
            if not wins:
                continue
            won_at, owner = min(wins, key=lambda w: w[0])
            if owner is None:
                continue
            invoices = (await d.call("billing", "GET", "/invoices", params={"lead_id": lead_id, "limit": 500})).json()
            for invoice in invoices["items"] if isinstance(invoices, dict) else invoices:
                if invoice["kind"] == "deposit":
                    if invoice["status"] == "paid" and invoice["paid_at"]:
                        paid[owner].append(
                            Paid(
                                "deposit",
                                Decimal(invoice["amount"]),
                                invoice["currency"],
                                datetime.fromisoformat(invoice["paid_at"]),
                                won_at,
                            )
                        )
                    continue
                for payment in invoice.get("payments", []):
                    paid[owner].append(
                        Paid(
                            "invoice",
                            Decimal(payment["amount"]),
                            invoice["currency"],
                            datetime.fromisoformat(payment["paid_at"]),
                            won_at,
                        )
                    )
        commission_failures = []
        reps = [r for r in figures["reps"] if r["person_id"] in self.reps]
        for rep in reps:
            lo = datetime.fromisoformat(figures["from"] + "T00:00:00+00:00")
            hi = datetime.fromisoformat(figures["to"] + "T00:00:00+00:00")
            mine = [p for p in paid.get(rep["person_id"], []) if lo <= p.paid_at < hi]
            expected = sum((m.paid for m in commission(plan, mine)), Decimal(0)) if plan else Decimal(0)
            reported = Decimal(rep["commission"]["amount"]) if rep["commission"] else Decimal(0)
            if expected != reported:
                commission_failures.append(
                    f"{rep['name']}: commission {reported} in leads, the plan on billing's payments gives {expected}"
                )
        return [
            ("every lead has an owner (none left in the pool)", everyone.get("total", 0), pool_failures),
            ("each rep's commission is the plan applied to what billing says was paid", len(reps), commission_failures),
        ]
