"""Agreements kept to the letter, in the simulated agency: clients accept their estimate through
its signed link, a project from hell is written off, a client who abuses scope or mistreats the
staff is terminated with notice, and a client who wanted to leave takes a discount or a smaller
plan. The cross-service checks that go with them live here:

- every estimate accepted by link is won in leads, signed through the link;
- every discount or smaller plan taken shows on the invoices of the periods it covers;
- every written-off project has nothing left to pay in billing and is listed with its amount;
- every termination ended the client's subscriptions at the end of its notice and is reported
  as a termination by retention, not as churn."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clientflow.simulate import Action, Driver, Person, Prospect

# A period that began after an offer was taken has surely started this long after it.
_NEXT_PERIOD = timedelta(days=32)
_OFFER_LINES = {"discount": "Save offer", "downgrade": "downgraded plan"}


class Agreements:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def accept_by_link(self, prospect: Prospect, person: Person) -> bool:
        """The client opens the estimate's link, reads it, and accepts by typing their name."""
        d = self.driver
        assert person.acceptance_url is not None
        page = await d.follow(person.acceptance_url, service="leads")
        if page.status_code != 200:
            d.problems.append(f"estimate link of prospect {prospect.no} answered {page.status_code}: {page.text[:160]}")
            return False
        accepted = await d.follow(person.acceptance_url, "POST", service="leads", data={"name": prospect.lead["name"]})
        if accepted.status_code != 200:
            d.problems.append(f"acceptance by prospect {prospect.no} refused: {accepted.status_code}")
            return False
        person.won, person.signed_via, person.link_deal_id = True, "link", person.deal_id
        d.counts["accepted_by_link"] += 1
        return True

    async def do_milestone(self, action: Action, key: str) -> bool:
        _, person = self.driver.person(action)
        if not (person.deal_id and person.won):
            return False
        deal = await self.driver.call("leads", "GET", f"/deals/{person.deal_id}")
        if deal.status_code != 200:
            return False
        amount = (Decimal(deal.json()["total"]) * Decimal(action.get("share"))).quantize(Decimal("0.01"))
        r = await self.driver.call(
            "billing",
            "POST",
            f"/deals/{person.deal_id}/invoices",
            key,
            json={"kind": "milestone", "amount": str(amount)},
        )
        return r.status_code == 201

    async def do_write_off(self, action: Action, key: str) -> bool:
        _, person = self.driver.person(action)
        if not (person.deal_id and person.won):
            return False
        r = await self.driver.call(
            "billing", "POST", f"/deals/{person.deal_id}/write-off", key, json={"reason": action.get("reason")}
        )
        if r.status_code != 201:
            self.driver.problems.append(f"write-off of deal {person.deal_id} refused: {r.status_code} {r.text[:160]}")
            return False
        person.written_off = True
        return True

    async def do_upsell(self, action: Action, key: str) -> bool:
        """A loyal client buys a project on top of the retainer, signed by a person."""
        d = self.driver
        prospect, person = d.person(action)
        if not person.lead_id or person.left or person.terminated:
            return False
        # Only a client still running a retainer buys on top (billing may have ended it: dunning).
        subs = await d.call("billing", "GET", "/subscriptions", params={"lead_id": person.lead_id})
        if subs.status_code != 200 or not any(s["status"] in ("active", "paused") for s in subs.json()):
            return False
        body = {
            "title": f"{prospect.lead['company']} campaign project",
            "kind": "project",
            "currency": "EUR",
            "lines": [
                {"description": "a campaign on top", "hours": action.get("hours"), "amount": action.get("amount")}
            ],
        }
        made = await d.call("leads", "POST", f"/leads/{person.lead_id}/deals", f"{key}:p", json=body)
        if made.status_code != 201:
            d.problems.append(
                f"upsell estimate for prospect {action.who} refused: {made.status_code} {made.text[:160]}"
            )
            return False
        deal_id = made.json()["deal_id"]
        won = await d.call(
            "leads", "POST", f"/deals/{deal_id}/won", f"{key}:w", json={"signed_by": prospect.lead["name"]}
        )
        if won.status_code != 200:
            return False
        person.deal_id, person.deal_kind = deal_id, "project"
        return True

    async def do_terminate(self, action: Action, key: str) -> bool:
        d = self.driver
        _, person = d.person(action)
        if not person.lead_id or person.left or person.terminated:
            return False
        r = await d.call(
            "retention",
            "POST",
            f"/clients/{person.lead_id}/termination",
            key,
            json={"reason": action.get("reason"), "notice_days": action.get("notice_days")},
        )
        if r.status_code != 201:
            # e.g. the subscription already ended through dunning, or is still pending its deposit
            d.problems.append(f"termination of prospect {action.who} refused: {r.status_code} {r.text[:160]}")
            return False
        effective = datetime.fromisoformat(r.json()["effective_at"])
        person.terminated = (action.get("reason"), effective)
        d.counts[f"terminated_{action.get('reason')}"] += 1
        return True

    # ------------------------------------------------------------------ checks

    async def _invoices(self, lead_id: str) -> list[dict[str, Any]]:
        r = await self.driver.call("billing", "GET", "/invoices", params={"lead_id": lead_id, "limit": 500})
        items = r.json() if r.status_code == 200 else []
        return items["items"] if isinstance(items, dict) else items

    async def checks(self) -> list[tuple[str, int, list[str]]]:
        d = self.driver
        people = [p for p in d.people.values() if p.lead_id]

        by_link = [p for p in people if p.signed_via == "link"]
        link_failures = []
        for person in by_link:
            deal = (await d.call("leads", "GET", f"/deals/{person.link_deal_id}")).json()
            if deal.get("status") != "won" or deal.get("signed_via") != "link" or not deal.get("accepted_digest"):
                link_failures.append(
                    f"deal {person.link_deal_id} accepted by link is {deal.get('status')},"
                    f" signed via {deal.get('signed_via')}"
                )

        offers = [p for p in people if p.offer is not None and d.now - p.offer[1] > _NEXT_PERIOD]
        offer_failures = []
        for person in offers:
            assert person.offer is not None and person.lead_id is not None
            kind, taken = person.offer
            subs = (await d.call("billing", "GET", "/subscriptions", params={"lead_id": person.lead_id})).json()
            if any(
                s["status"] == "cancelled" and (s["cancelled_at"] or "") < (taken + _NEXT_PERIOD).isoformat()
                for s in subs
            ):
                continue  # ended (dunning, a later cancellation) before a period at the offer's fee
            lines = [line["description"] for i in await self._invoices(person.lead_id) for line in i["lines"]]
            if not any(_OFFER_LINES[kind] in text for text in lines):
                offer_failures.append(f"client {person.lead_id} took a {kind} but no invoice shows it")

        written = [p for p in people if p.written_off]
        listed = {w["deal_id"] for w in (await d.call("billing", "GET", "/write-offs")).json()["write_offs"]}
        write_off_failures = []
        for person in written:
            assert person.lead_id is not None
            if person.deal_id not in listed:
                write_off_failures.append(f"deal {person.deal_id} was written off but billing does not list it")
            due = [
                i["number"]
                for i in await self._invoices(person.lead_id)
                if i["deal_id"] == person.deal_id and Decimal(i["amount_due"]) > 0
            ]
            if due:
                write_off_failures.append(f"deal {person.deal_id} was written off but {', '.join(due)} still ask money")

        ended = [p for p in people if p.terminated is not None and p.terminated[1] <= d.now]
        termination_failures = []
        for person in ended:
            assert person.lead_id is not None
            subs = (await d.call("billing", "GET", "/subscriptions", params={"lead_id": person.lead_id})).json()
            running = [s["subscription_id"] for s in subs if s["status"] != "cancelled"]
            if running:
                termination_failures.append(f"client {person.lead_id} was terminated but billing runs {running}")
        reported = (await d.economics()).get("terminations") or {}
        expected = Counter(p.terminated[0] for p in ended if p.terminated is not None)
        if ended and dict(reported.get("by_reason", {})) != dict(expected):
            termination_failures.append(
                f"retention reports terminations {reported.get('by_reason')}, the agency made {dict(expected)}"
            )
        return [
            ("every estimate accepted by link is won in leads, signed through the link", len(by_link), link_failures),
            ("every discount or smaller plan taken shows on the next invoices", len(offers), offer_failures),
            ("every written-off project is listed and asks nothing more", len(written), write_off_failures),
            (
                "every termination ended billing at its notice and is reported apart from churn",
                len(ended),
                termination_failures,
            ),
        ]
