"""Leads, the whole acquisition and sales surface, against a real broker and database: every
event it publishes and every event it applies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.leads.app import create_app
from services.leads.settings import Settings
from shared import events as ev
from shared import topics
from tests.support import TopicReader, as_json, event, eventually, producer, publish, run_service, service_settings

pytestmark = pytest.mark.integration


def lead(**over: object) -> dict:
    tag = uuid.uuid4().hex[:10]
    return {
        "name": "Ada Lovelace",
        "email": f"ada-{tag}@{tag}.example",
        "company": "Analytical Engines",
        "job_title": "Founder",
        "industry": "saas",
        "employees": 40,
        "country": "GB",
        "channel": "website",
        "budget": "8000",
        "currency": "GBP",
        "brief": "Grow organic traffic for our SaaS",
        "timeline": "next quarter",
        "needs": ["seo"],
        "consent_marketing": True,
        "legal_basis": "consent",
    } | over


@pytest.fixture
async def leads(kafka_bootstrap: str, database_url: str):
    settings = service_settings(Settings, bootstrap=kafka_bootstrap, database_url=database_url)
    async with run_service(create_app(settings), settings.port) as svc:
        yield svc


async def send(bootstrap: str, *envelopes: ev.Envelope) -> None:
    async with producer(bootstrap) as p:
        for envelope in envelopes:
            await publish(p, envelope)


def now() -> datetime:
    return datetime.now(UTC)


async def test_csv_import_reports_broken_rows_and_dedupes(leads) -> None:
    domain = uuid.uuid4().hex[:8]
    csv = (
        "name,email,company,channel,budget,currency,needs,consent_marketing,utm_source,extra\n"
        f"Ann,ann@{domain}.example,Acme,website,5000,EUR,seo;content,yes,google,x\n"
        f"ANN ,a.smith@{domain}.example,Acme,event,,,,no,,\n"  # same name, same company domain: Ann again
        "Cy,not-an-email,Cy Ltd,website,,,,,,\n"
        f"Di,di@{domain}-b.example,Di Co,pigeon,-5,EUR,,,,\n"
        f"Ed,ed@{domain}-c.example,Ed Co,seo,lots,EUR,,maybe,,\n"
        f"Fay,fay@{domain}-d.example,Fay Co,seo,100,ZZZ\n"  # short row
        f"Ann Again,ANN+news@{domain}.example,Acme,social,,,,,,\n"  # same person (normalised email)
    )
    r = await leads.client.post("/leads/import", content=csv, headers={"Content-Type": "text/csv"})
    report = as_json(r)
    assert (report["rows"], report["accepted"], report["duplicates"], report["rejected"]) == (7, 1, 2, 4)
    errors = {e["row"]: " ".join(e["errors"]) for e in report["errors"]}
    assert "invalid email" in errors[3]
    assert "unknown channel" in errors[4] and "negative" in errors[4]
    assert "'lots' is not a number" in errors[5] and "consent_marketing" in errors[5]
    assert "fields, the header has" in errors[6]
    assert report["ignored_columns"] == ["extra"]
    listed = as_json(await leads.client.get("/leads", params={"q": domain}))
    assert listed["total"] == 1
    colleague = await leads.client.post("/leads", json=lead(name="Bob", email=f"bob@{domain}.example"))
    assert colleague.status_code == 201  # a colleague at the same company is a lead of their own
    ann = as_json(await leads.client.get(f"/leads/{listed['items'][0]['lead_id']}"))
    assert [t["matched_by"] for t in ann["touches"]] == [None, "company_domain", "email"]
    assert ann["touches"][0]["utm"] == {"source": "google"}
    # a file that cannot be read at all is refused whole
    bad = await leads.client.post(
        "/leads/import", content="email,channel\nx@y.z,seo\n", headers={"Content-Type": "text/csv"}
    )
    assert bad.status_code == 422 and "missing required column(s): name" in bad.text


async def test_qualification_red_flags_and_icp(leads, kafka_bootstrap: str) -> None:
    good = as_json(await leads.client.post("/leads", json=lead()))
    poor = as_json(
        await leads.client.post(
            "/leads",
            json=lead(job_title="Intern", budget=None, currency=None, brief=None, timeline="ASAP please", needs=[]),
        )
    )
    assert set(poor["red_flags"]) >= {"no_written_brief", "no_defined_budget", "must_be_fast"}
    ok = as_json(await leads.client.post(f"/leads/{good['lead_id']}/qualification", json={"notes": "call went well"}))
    assert ok["qualified"] is True and ok["stage"] == "consideration"
    no = as_json(await leads.client.post(f"/leads/{poor['lead_id']}/qualification", json={}))
    assert no["qualified"] is False and "no_budget" in no["reasons"] and no["stage"] == "disqualified"

    flagged = await leads.client.post(
        f"/leads/{good['lead_id']}/red-flags", json={"name": "refuses_deposit", "evidence": "said no to 40% up front"}
    )
    assert flagged.status_code == 201
    assert {"name": "refuses_deposit", "evidence": "said no to 40% up front"}.items() <= flagged.json()["red_flags"][
        -1
    ].items()
    unknown = await leads.client.post(f"/leads/{good['lead_id']}/red-flags", json={"name": "smells", "evidence": "x"})
    assert unknown.status_code == 422 and "unknown red flag" in unknown.text
    by_flag = as_json(await leads.client.get("/leads", params={"red_flag": "refuses_deposit"}))
    assert [i["lead_id"] for i in by_flag["items"]] == [good["lead_id"]]
    assert as_json(await leads.client.get("/leads", params={"min_fit": 80, "stage": "consideration"}))["total"] == 1
    assert (await leads.client.get("/leads", params={"stage": "limbo"})).status_code == 422

    icp = as_json(await leads.client.get("/icp"))
    assert "industry" in icp["criteria"]
    replaced = await leads.client.put("/icp", content="criteria:\n  country:\n    weight: 1\n    values: [FR]\n")
    assert replaced.status_code == 200 and replaced.json()["rescored"] == 2
    assert as_json(await leads.client.get(f"/leads/{good['lead_id']}"))["fit_score"] == 0
    broken = await leads.client.put("/icp", content="criteria:\n  zodiac: {weight: 3}\n")
    assert broken.status_code == 422 and "unknown criterion 'zodiac'" in broken.text

    async with TopicReader(kafka_bootstrap, topics.LEADS) as reader:
        (qualified,) = await reader.wait_for("lead.qualified", lead_id=good["lead_id"])
        (disqualified,) = await reader.wait_for("lead.disqualified", lead_id=poor["lead_id"])
        moved = await reader.wait_for("lead.stage_changed", lead_id=poor["lead_id"])
    assert qualified.data["notes"] == "call went well" and qualified.data["need"] is True
    assert "no_budget" in disqualified.data["reasons"]
    assert moved[-1].data["to_stage"] == "disqualified" and moved[-1].data["cause"] == "lead.disqualified"
    metrics = (await leads.client.get("/metrics")).text
    assert 'clientflow_leads_disqualified_total{reason="no_budget"} 1.0' in metrics
    assert "clientflow_leads_qualified_total 1.0" in metrics


async def test_engagement_and_events_from_other_services(leads, kafka_bootstrap: str) -> None:
    lead_id = uuid.UUID(as_json(await leads.client.post("/leads", json=lead()))["lead_id"])
    message = uuid.uuid4()
    earlier = now() - timedelta(days=14)
    opened = event("email.opened", ev.EmailOpened(message_id=message), lead_id=lead_id, producer_name="nurture")
    old_click = event(
        "email.clicked",
        ev.EmailClicked(message_id=message, url="https://x.example"),
        lead_id=lead_id,
        producer_name="nurture",
    ).model_copy(update={"occurred_at": earlier})
    feedback = event(
        "feedback.received", ev.FeedbackReceived(survey="nps", score=9), lead_id=lead_id, producer_name="nurture"
    )
    takeover = event(
        "takeover.started", ev.TakeoverStarted(by="sam", reason="replied"), lead_id=lead_id, producer_name="nurture"
    )
    unsub = event("lead.unsubscribed", ev.LeadUnsubscribed(), lead_id=lead_id, producer_name="nurture")
    tier = event(
        "client.tier_changed",
        ev.ClientTierChanged(from_tier=None, to_tier="fire", reasons=["late payments"]),
        lead_id=lead_id,
        producer_name="retention",
    )
    await send(kafka_bootstrap, opened, old_click, old_click, feedback, takeover, unsub, tier)

    async def engaged() -> dict:
        body = as_json(await leads.client.get(f"/leads/{lead_id}"))
        return body if body["tier"] == "fire" and not body["consent_marketing"] else {}

    body = await eventually(engaged)
    # open 5 + feedback 10 + takeover 15 now, plus a click from two weeks ago worth half of 10
    assert body["engagement_score"] == 35
    assert body["stage"] == "interest" and body["tier_reasons"] == ["late payments"]
    assert [a["type"] for a in body["activity"]].count("email.clicked") == 1  # the redelivery changed nothing

    ready = event(
        "lead.sales_ready",
        ev.LeadSalesReady(engagement_score=80, reason="clicked pricing"),
        lead_id=lead_id,
        producer_name="nurture",
    )
    await send(kafka_bootstrap, ready)

    async def considered() -> dict:
        body = as_json(await leads.client.get(f"/leads/{lead_id}"))
        return body if body["stage"] == "consideration" else {}

    body = await eventually(considered)
    assert body["engagement_score"] == 80 and body["fit_score"] >= 60  # kept apart

    deal = as_json(
        await leads.client.post(
            f"/leads/{lead_id}/deals",
            json={
                "title": "Site",
                "kind": "project",
                "currency": "GBP",
                "lines": [{"description": "Design", "amount": "3000"}],
            },
        )
    )
    won = as_json(await leads.client.post(f"/deals/{deal['deal_id']}/won", json={"signed_by": "Ada"}))
    assert Decimal(won["deposit_share"]) == Decimal("0.80")  # a `fire` tier asks the maximum
    async with TopicReader(kafka_bootstrap, topics.DEALS) as reader:
        (won_event,) = await reader.wait_for("deal.won", lead_id=lead_id)
    assert won_event.data["tier"] == "fire" and won_event.data["deposit_share"] == "0.80"

    cleared = event(
        "deposit.cleared",
        ev.DepositCleared(
            deal_id=uuid.UUID(deal["deal_id"]),
            invoice_id=uuid.uuid4(),
            amount=Decimal("2400"),
            currency="GBP",
            cleared_at=now(),
        ),
        lead_id=lead_id,
        producer_name="billing",
    )
    saved = event(
        "cancellation.saved",
        ev.CancellationSaved(cancellation_id=uuid.uuid4(), offer=ev.SaveOffer(kind="pause")),
        lead_id=lead_id,
        producer_name="retention",
    )
    referral_id = uuid.uuid4()
    friend = f"friend-{referral_id.hex[:8]}@friend.example"
    referral = event(
        "referral.made",
        ev.ReferralMade(referral_id=referral_id, name="Friend", email=friend, company="F"),
        lead_id=lead_id,
        producer_name="retention",
    )
    await send(kafka_bootstrap, cleared)

    async def paying() -> dict:
        body = as_json(await leads.client.get(f"/leads/{lead_id}"))
        return body if body["stage"] == "action" else {}

    await eventually(paying)  # payments and cancellations are different topics: no order between them
    await send(kafka_bootstrap, saved)

    async def kept() -> dict:
        body = as_json(await leads.client.get(f"/leads/{lead_id}"))
        return body if body["stage"] == "retention" else {}

    await eventually(kept, timeout=45)  # topics are not ordered between them: the referral comes after
    await send(kafka_bootstrap, referral)

    async def advocate() -> dict:
        body = as_json(await leads.client.get(f"/leads/{lead_id}"))
        return body if body["stage"] == "advocacy" else {}

    body = await eventually(advocate, timeout=45)  # the embedded broker can be slow to hand over a new topic's batch
    assert [t["to_stage"] for t in body["timeline"]] == [
        "awareness",
        "interest",
        "consideration",
        "decision",
        "action",
        "retention",
        "advocacy",
    ]
    assert body["referrals"] == 1
    referred = as_json(await leads.client.get("/leads", params={"q": friend}))["items"]
    assert referred[0]["channel"] == "referral" and referred[0]["referred_by"] == str(lead_id)
    async with TopicReader(kafka_bootstrap, topics.LEADS) as reader:
        (captured,) = await reader.wait_for("lead.captured", lead_id=referred[0]["lead_id"])
    assert captured.data["channel"] == "referral" and captured.data["referred_by"] == str(lead_id)


async def test_deals_change_requests_spend_funnel_and_erasure(leads, kafka_bootstrap: str) -> None:
    lead_id = as_json(await leads.client.post("/leads", json=lead()))["lead_id"]
    estimate = {
        "title": "Website",
        "kind": "project",
        "currency": "GBP",
        "hourly_rate": "100",
        "lines": [
            {"description": "Design of five landing pages", "hours": "20", "amount": "2000"},
            {"description": "SEO audit", "hours": "5", "amount": "500"},
        ],
    }
    deal = as_json(await leads.client.post(f"/leads/{lead_id}/deals", json=estimate))
    early = await leads.client.post(
        f"/deals/{deal['deal_id']}/change-requests", json={"description": "x", "amount": "1"}
    )
    assert early.status_code == 409 and "signed" in early.text
    future = await leads.client.post(
        f"/deals/{deal['deal_id']}/won", json={"signed_by": "Ada", "signed_at": (now() + timedelta(days=2)).isoformat()}
    )
    assert future.status_code == 422 and "future" in future.text
    as_json(
        await leads.client.post(
            f"/deals/{deal['deal_id']}/won", json={"signed_by": "Ada", "signed_at": now().isoformat()}
        )
    )
    inside = as_json(
        await leads.client.post(
            f"/deals/{deal['deal_id']}/change-requests",
            json={"description": "New colours on the landing pages", "hours": "3"},
        )
    )
    assert inside["in_scope"] is True and inside["line"] == 0 and Decimal(inside["amount"]) == 0
    outside = as_json(
        await leads.client.post(
            f"/deals/{deal['deal_id']}/change-requests", json={"description": "Build a mobile app", "hours": "10"}
        )
    )
    assert outside["in_scope"] is False and Decimal(outside["amount"]) == Decimal("1000")
    unpriced = await leads.client.post(f"/deals/{deal['deal_id']}/change-requests", json={"description": "A podcast"})
    assert unpriced.status_code == 422 and "needs an amount" in unpriced.text

    other = as_json(await leads.client.post(f"/leads/{lead_id}/deals", json=estimate | {"title": "Phase 2"}))
    lost = as_json(await leads.client.post(f"/deals/{other['deal_id']}/lost", json={"reason": "budget"}))
    assert lost["status"] == "lost"

    spend = await leads.client.post(
        "/channels/paid_ads/spend", json={"amount": "1500.50", "currency": "eur", "period": "2026-03"}
    )
    assert spend.status_code == 201 and spend.json()["period_end"] == "2026-03-31"
    bad_spend = await leads.client.post(
        "/channels/pigeon/spend", json={"amount": "-1", "currency": "EUR", "period": "2026-03"}
    )
    assert bad_spend.status_code == 422
    bad_currency = await leads.client.post(
        "/channels/seo/spend", json={"amount": "1", "currency": "ABC", "period": "2026-03"}
    )
    assert bad_currency.status_code == 422 and "unknown currency" in bad_currency.text

    funnel = as_json(await leads.client.get("/funnel", params={"period": "month"}))
    assert funnel["total"] == 1 and funnel["reached"]["decision"] == 1
    assert funnel["by_channel"]["website"]["total"] == 1 and funnel["by_period"][0]["total"] == 1
    # reaching `decision` passed through the stages before it; nobody paid yet
    assert {"from_stage": "awareness", "to_stage": "interest", "rate": "1.0000"} in funnel["conversion"]
    assert {"from_stage": "decision", "to_stage": "action", "rate": "0.0000"} in funnel["conversion"]
    assert funnel["overall_conversion"] == "0.0000"

    erased = await leads.client.delete(f"/leads/{lead_id}")
    assert erased.status_code == 200 and erased.json()["erased"] is True
    again = await leads.client.delete(f"/leads/{lead_id}")
    assert again.status_code == 200 and again.json()["erased_at"] == erased.json()["erased_at"]
    gone = as_json(await leads.client.get(f"/leads/{lead_id}"))
    assert gone["name"] is None and gone["email"] is None and gone["channel"] == "website" and gone["erased"]
    assert as_json(await leads.client.get("/funnel"))["total"] == 1  # the anonymous count stays
    refused = await leads.client.post(f"/leads/{lead_id}/deals", json=estimate)
    assert refused.status_code == 409 and "erased" in refused.text
    assert (await leads.client.delete(f"/leads/{uuid.uuid4()}")).status_code == 404

    async with TopicReader(kafka_bootstrap, topics.DEALS, topics.LEADS) as reader:
        requested = await reader.wait_for("deal.change_requested", lead_id=lead_id, count=2)
        await reader.wait_for("deal.proposed", lead_id=lead_id, count=2)
        (lost_event,) = await reader.wait_for("deal.lost", lead_id=lead_id)
        (erased_event,) = await reader.wait_for("lead.erased", lead_id=lead_id)
        spent = [e for e in await reader.wait_for("channel.spend_recorded") if e.data["channel"] == "paid_ads"]
    assert sorted((e.data["in_scope"], e.data["amount"]) for e in requested) == [(False, "1000.00"), (True, "0")]
    # The reason was free text, sealed with the person's key; read after the erasure, whatever
    # it said is gone from the topic for good (the key was destroyed), the deal's id is not.
    assert erased_event.data["requested_at"] and lost_event.data["deal_id"]
    assert lost_event.data["reason"] == "[sealed]" and lost_event.sealed is not None
    assert reader.data_keys[lost_event.sealed.key_id] is None
    assert spent[0].data["amount"] == "1500.50" and spent[0].data["currency"] == "EUR"
    metrics = (await leads.client.get("/metrics")).text
    assert 'clientflow_leads_deals_total{outcome="won"} 1.0' in metrics
    assert 'clientflow_leads_deal_value_total{currency="GBP",outcome="won"} 2500.0' in metrics
    assert 'clientflow_leads_captured_total{channel="website"} 1.0' in metrics
    assert 'clientflow_leads_stage{stage="decision"} 1.0' in metrics


async def test_explicit_merge_and_manual_backward_move(leads) -> None:
    kept = as_json(await leads.client.post("/leads", json=lead()))["lead_id"]
    dup = as_json(
        await leads.client.post("/leads", json=lead(email=f"x{uuid.uuid4().hex[:6]}@gmail.com", channel="event"))
    )["lead_id"]
    merged = as_json(
        await leads.client.post(f"/leads/{kept}/merge", json={"duplicate_id": dup, "reason": "same person"})
    )
    assert [t["channel"] for t in merged["touches"]] == ["website", "event"]
    assert as_json(await leads.client.get(f"/leads/{dup}"))["merged_into"] == kept
    assert as_json(await leads.client.get("/leads"))["total"] == 1
    self_merge = await leads.client.post(f"/leads/{kept}/merge", json={"duplicate_id": kept})
    assert self_merge.status_code == 422
    moved = as_json(await leads.client.post(f"/leads/{kept}/stage", json={"stage": "churned", "reason": "went quiet"}))
    back = as_json(await leads.client.post(f"/leads/{kept}/stage", json={"stage": "interest", "reason": "came back"}))
    assert moved["stage"] == "churned" and back["stage"] == "interest"
    assert [t["cause"] for t in back["timeline"]][-2:] == ["manual: went quiet", "manual: came back"]
    history = as_json(await leads.client.get(f"/leads/{kept}"))["activity"]
    assert any(a["type"] == "lead.merged" and a["detail"]["reason"] == "same person" for a in history)
