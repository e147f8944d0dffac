"""The console's pages (GET): each asks the services it needs at once, with the person's token,
and renders what came back; a service that did not answer gets a notice in its place."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from console.backend import Reply, gather
from console.web import backend, down_notices, render, signed_in
from shared.events import FUNNEL_STAGES

# The funnel's stages are the contract's; the cancellation reasons and payment methods are the
# services' request vocabularies (tests/console/test_vocabulary.py keeps them equal).
STAGES = FUNNEL_STAGES
CANCEL_REASONS = ("price", "budget_cut", "not_using", "poor_results", "switching_provider", "project_done", "other")
PAY_METHODS = ("bank_transfer", "card", "cash", "cheque", "direct_debit", "other", "paypal")

router = APIRouter()


async def _none() -> Reply:
    """A part the person's role may not read: not asked for (neither data nor a service down)."""
    return Reply("none")


def _now() -> datetime:
    return datetime.now(UTC)


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _names(people: Reply, reps: Reply) -> dict[str, str]:
    """Person id -> name from whatever the person may read (/people for an admin, the team's reps)."""
    names: dict[str, str] = {}
    for reply in (reps, people):
        if reply.ok and isinstance(reply.data, list):
            for row in reply.data:
                pid = row.get("person_id") or row.get("id")
                if pid and row.get("name"):
                    names[str(pid)] = str(row["name"])
    return names


@router.get("/pipeline", response_class=HTMLResponse)
async def pipeline(
    request: Request, owner: str = "", channel: str = "", min_fit: str = "", q: str = ""
) -> HTMLResponse:
    session = signed_in(request, "reports.read")
    api = backend(request)
    fit = min_fit if min_fit.isdigit() and int(min_fit) <= 100 else ""
    may_read = session.may("leads.read")
    parts = await gather(
        funnel=api.get("leads", "/funnel", channel=channel or None),
        leads=api.get(
            "leads", "/leads", owner=owner or None, channel=channel or None, min_fit=fit or None, q=q or None, limit=500
        )
        if may_read
        else _none(),
        people=api.get("leads", "/people") if session.may("people.manage") else _none(),
        reps=api.get("leads", "/team/reps") if session.may("team.read") else _none(),
        channels=api.get("leads", "/channels"),
    )
    board: dict[str, list[dict[str, Any]]] = {stage: [] for stage in STAGES}
    if parts["leads"].ok:
        for lead in parts["leads"].data.get("items", []):
            board.setdefault(lead.get("stage") or "awareness", []).append(lead)
    counts = parts["funnel"].data.get("stages", {}) if parts["funnel"].ok else {}
    channels = [c.get("channel") for c in parts["channels"].data] if parts["channels"].ok else []
    return render(
        request,
        "pipeline.html.j2",
        board=board,
        counts=counts,
        stages=STAGES,
        may_read=may_read,
        filters={"owner": owner, "channel": channel, "min_fit": min_fit, "q": q},
        channels=channels,
        names=_names(parts["people"], parts["reps"]),
        total=parts["leads"].data.get("total") if parts["leads"].ok else None,
        funnel=parts["funnel"].data if parts["funnel"].ok else None,
        down=down_notices(*parts.values()),
    )


def _timeline(lead: dict[str, Any], messages: Reply, invoices: Reply, client: Reply) -> list[dict[str, Any]]:
    """One list, oldest first, of what happened to the person across the four services."""
    items: list[dict[str, Any]] = []
    for entry in lead.get("activity", []):
        items.append(
            {"at": entry.get("at"), "service": "leads", "what": entry.get("type"), "detail": entry.get("detail") or {}}
        )
    if messages.ok:
        for m in messages.data or []:
            items.append(
                {
                    "at": m.get("sent_at"),
                    "service": "nurture",
                    "what": "email.sent",
                    "detail": {"subject": m.get("subject"), "sequence": m.get("sequence")},
                }
            )
    if invoices.ok:
        for inv in invoices.data or []:
            items.append(
                {
                    "at": inv.get("issued_at"),
                    "service": "billing",
                    "what": "invoice.issued",
                    "detail": {
                        "number": inv.get("number"),
                        "kind": inv.get("kind"),
                        "amount": inv.get("amount"),
                        "currency": inv.get("currency"),
                    },
                }
            )
            for pay in inv.get("payments") or []:
                items.append(
                    {
                        "at": pay.get("paid_at") or pay.get("at"),
                        "service": "billing",
                        "what": "payment.succeeded",
                        "detail": {
                            "number": inv.get("number"),
                            "amount": pay.get("amount"),
                            "currency": inv.get("currency"),
                        },
                    }
                )
    if client.ok:
        for name, factor in (client.data.get("factors") or {}).items():
            for event in factor.get("events") or []:
                if event.get("type", "").startswith(("email.", "payment.", "invoice.", "deal.", "deposit.")):
                    continue  # shown from their own service already
                items.append(
                    {
                        "at": event.get("at"),
                        "service": "retention",
                        "what": event.get("type"),
                        "detail": {"factor": name, **(event.get("detail") or {})},
                    }
                )
    # The same event can reach several services' views; keep one per (what, moment to the second).
    seen: set[tuple[str, str]] = set()
    unique = []
    for item in sorted(items, key=lambda i: str(i.get("at") or "")):
        key = (str(item["what"]), str(item.get("at") or "")[:19])
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


async def lead_context(request: Request, lead_id: str) -> dict[str, Any]:
    """Everything the lead page shows (also what a failed action re-renders)."""
    session = signed_in(request, "leads.read")
    api = backend(request)
    first = await gather(
        lead=api.get("leads", f"/leads/{lead_id}"),
        messages=api.get("nurture", f"/leads/{lead_id}/messages") if session.may("messages.read") else _none(),
        takeover=api.get("nurture", f"/leads/{lead_id}/takeover") if session.may("messages.read") else _none(),
        invoices=api.get("billing", "/invoices", lead_id=lead_id, limit=200)
        if session.may("invoices.read")
        else _none(),
        subscriptions=api.get("billing", "/subscriptions", lead_id=lead_id)
        if session.may("subscriptions.read")
        else _none(),
        client=api.get("retention", f"/clients/{lead_id}") if session.may("clients.read") else _none(),
    )
    lead = first["lead"]
    deal_ids = list(lead.data.get("deals", [])) if lead.ok else []
    deals: list[dict[str, Any]] = []
    authorizations: dict[str, Any] = {}
    more: list[Reply] = []
    if deal_ids:
        replies = await gather(**{f"d{i}": api.get("leads", f"/deals/{d}") for i, d in enumerate(deal_ids)})
        deals = [r.data for r in replies.values() if r.ok]
        more.extend(replies.values())
        won = [d["deal_id"] for d in deals if d.get("status") == "won"]
        if won and session.may("invoices.read"):
            auth = await gather(**{f"a{i}": api.get("billing", f"/deals/{d}/authorization") for i, d in enumerate(won)})
            authorizations = {r.data["deal_id"]: r.data for r in auth.values() if r.ok}
            more.extend(r for r in auth.values() if r.down)
    return {
        "lead_id": lead_id,
        "lead": lead.data if lead.ok else None,
        "lead_reply": lead,
        "deals": deals,
        "authorizations": authorizations,
        "takeover": first["takeover"].data if first["takeover"].ok else None,
        "invoices": first["invoices"].data if first["invoices"].ok else [],
        "subscriptions": first["subscriptions"].data if first["subscriptions"].ok else [],
        "client": first["client"].data if first["client"].ok else None,
        "timeline": _timeline(lead.data, first["messages"], first["invoices"], first["client"]) if lead.ok else [],
        "down": down_notices(*first.values(), *more),
        "pay_methods": PAY_METHODS,
    }


@router.get("/leads/{lead_id}", response_class=HTMLResponse)
async def lead_page(request: Request, lead_id: str) -> HTMLResponse:
    context = await lead_context(request, lead_id)
    reply: Reply = context["lead_reply"]
    if not reply.ok and not reply.down:
        return render(request, "error.html.j2", status=reply.status or 404, message=reply.message, down=[])
    return render(request, "lead.html.j2", errors={}, values={}, **context)


@router.get("/exports/{export_id}", response_class=HTMLResponse)
async def export_page(request: Request, export_id: str) -> HTMLResponse:
    """An export of a person's data: each service's progress, then the downloads."""
    signed_in(request, "exports.run")
    reply = await backend(request).get("leads", f"/exports/{export_id}")
    status = 200 if reply.ok else (reply.status if 400 <= reply.status < 500 else 503)
    return render(
        request,
        "export.html.j2",
        status=status,
        export=reply.data if reply.ok else None,
        export_id=export_id,
        refused=reply.message if not reply.ok and not reply.down else "",
        down=down_notices(reply),
    )


@router.get("/exports/{export_id}/{name}")
async def export_download(request: Request, export_id: str, name: str) -> Response:
    """The export's JSON document or its zip of e-mails, passed on from leads (the person's token
    never reaches the browser)."""
    signed_in(request, "exports.run")
    if name not in ("download", "mail.zip"):
        return render(request, "error.html.j2", status=404, message="no such download", down=[])
    answer = await backend(request).download("leads", f"/exports/{export_id}/{name}")
    if answer is None or answer.status_code >= 500:
        return render(request, "error.html.j2", status=503, message="the leads service did not answer", down=["leads"])
    if not answer.is_success:
        detail = (
            answer.json().get("detail") if answer.headers.get("content-type", "").startswith("application/json") else ""
        )
        return render(request, "error.html.j2", status=answer.status_code, message=str(detail or answer.text), down=[])
    headers = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "content-disposition")}
    return Response(answer.content, status_code=200, headers=headers)


@router.get("/clients", response_class=HTMLResponse)
async def clients(
    request: Request, tier: str = "", band: str = "", owner: str = "", sort: str = "health"
) -> HTMLResponse:
    session = signed_in(request, "clients.read")
    api = backend(request)
    parts = await gather(
        clients=api.get("retention", "/clients", tier=tier or None, band=band or None, owner=owner or None, limit=500),
        subscriptions=api.get("billing", "/subscriptions") if session.may("subscriptions.read") else _none(),
        leads=api.get("leads", "/leads", limit=500),
        people=api.get("leads", "/people") if session.may("people.manage") else _none(),
        reps=api.get("leads", "/team/reps") if session.may("team.read") else _none(),
    )
    names = (
        {lead["lead_id"]: lead.get("name") or lead.get("company") for lead in parts["leads"].data.get("items", [])}
        if parts["leads"].ok
        else {}
    )
    dunning: dict[str, str] = {}
    if parts["subscriptions"].ok:
        for sub in parts["subscriptions"].data:
            if sub.get("dunning_state"):
                dunning[sub["lead_id"]] = sub["dunning_state"]
    rows = parts["clients"].data.get("items", []) if parts["clients"].ok else []
    keys = {
        "health": lambda r: (r.get("health_score") is None, r.get("health_score") or 0),
        "mrr": lambda r: -Decimal(str((r.get("mrr") or {}).get("amount") or 0)),
        "tier": lambda r: str(r.get("tier") or "~"),
        "since": lambda r: str(r.get("became_client_at") or "~"),
    }
    rows.sort(key=keys.get(sort, keys["health"]))  # type: ignore[arg-type]
    return render(
        request,
        "clients.html.j2",
        rows=rows,
        names=names,
        dunning=dunning,
        people=_names(parts["people"], parts["reps"]),
        filters={"tier": tier, "band": band, "owner": owner, "sort": sort},
        down=down_notices(*parts.values()),
    )


async def client_context(request: Request, lead_id: str) -> dict[str, Any]:
    session = signed_in(request, "clients.read")
    api = backend(request)
    parts = await gather(
        client=api.get("retention", f"/clients/{lead_id}"),
        lead=api.get("leads", f"/leads/{lead_id}") if session.may("leads.read") else _none(),
        subscriptions=api.get("billing", "/subscriptions", lead_id=lead_id)
        if session.may("subscriptions.read")
        else _none(),
        invoices=api.get("billing", "/invoices", lead_id=lead_id, limit=200)
        if session.may("invoices.read")
        else _none(),
    )
    subs = parts["subscriptions"].data if parts["subscriptions"].ok else []
    # Hours used per period, for each retainer (billing's GET /subscriptions/{id}/hours).
    hours_replies = (
        await gather(
            **{f"h{i}": api.get("billing", f"/subscriptions/{s['subscription_id']}/hours") for i, s in enumerate(subs)}
        )
        if subs
        else {}
    )
    hours = {
        s["subscription_id"]: reply.data[:6] for s, reply in zip(subs, hours_replies.values(), strict=True) if reply.ok
    }
    return {
        "lead_id": lead_id,
        "client": parts["client"].data if parts["client"].ok else None,
        "client_reply": parts["client"],
        "lead": parts["lead"].data if parts["lead"].ok else None,
        "hours": hours,
        "subscriptions": subs,
        "invoices": parts["invoices"].data if parts["invoices"].ok else [],
        "down": down_notices(*parts.values()),
        "reasons": CANCEL_REASONS,
        "cancellation": None,
    }


@router.get("/clients/{lead_id}", response_class=HTMLResponse)
async def client_page(request: Request, lead_id: str, cancellation: str = "") -> HTMLResponse:
    context = await client_context(request, lead_id)
    reply: Reply = context["client_reply"]
    if not reply.ok and not reply.down:
        return render(request, "error.html.j2", status=reply.status or 404, message=reply.message, down=[])
    if cancellation:
        found = await backend(request).get("retention", f"/cancellations/{cancellation}")
        if found.ok and found.data.get("lead_id") == lead_id:
            context["cancellation"] = found.data
    return render(request, "client.html.j2", errors={}, values={}, **context)


async def invoices_context(request: Request, show: str = "open") -> dict[str, Any]:
    session = signed_in(request, "invoices.read")
    api = backend(request)
    parts = await gather(
        invoices=api.get("billing", "/invoices", status="open", limit=500),
        subscriptions=api.get("billing", "/subscriptions") if session.may("subscriptions.read") else _none(),
        leads=api.get("leads", "/leads", limit=500),
    )
    now = _now()
    dunning = (
        {s["subscription_id"]: s.get("dunning_state") for s in parts["subscriptions"].data}
        if parts["subscriptions"].ok
        else {}
    )
    names = (
        {lead["lead_id"]: lead.get("name") or lead.get("company") for lead in parts["leads"].data.get("items", [])}
        if parts["leads"].ok
        else {}
    )
    rows = []
    for inv in parts["invoices"].data if parts["invoices"].ok else []:
        due = _moment(inv.get("due_at"))
        step = dunning.get(inv.get("subscription_id") or "")
        row = {**inv, "overdue": bool(due and due < now), "dunning": step}
        if show == "overdue" and not row["overdue"]:
            continue
        if show == "dunning" and not step:
            continue
        rows.append(row)
    rows.sort(key=lambda r: str(r.get("due_at")))
    return {
        "rows": rows,
        "names": names,
        "show": show,
        "pay_methods": PAY_METHODS,
        "down": down_notices(*parts.values()),
    }


@router.get("/invoices", response_class=HTMLResponse)
async def invoices(request: Request, show: str = "open") -> HTMLResponse:
    return render(request, "invoices.html.j2", errors={}, values={}, **await invoices_context(request, show))


@router.get("/review", response_class=HTMLResponse)
async def review(request: Request) -> HTMLResponse:
    session = signed_in(request, "clients.read")
    api = backend(request)
    parts = await gather(
        latest=api.get("retention", "/reviews/latest"),
        leads=api.get("leads", "/leads", limit=500) if session.may("leads.read") else _none(),
    )
    names = (
        {lead["lead_id"]: lead.get("name") or lead.get("company") for lead in parts["leads"].data.get("items", [])}
        if parts["leads"].ok
        else {}
    )
    latest = parts["latest"]
    return render(
        request,
        "review.html.j2",
        review=latest.data if latest.ok else None,
        missing=latest.message if latest.status == 404 else "",
        names=names,
        down=down_notices(*parts.values()),
    )


METRICS = (
    "cac",
    "ltv",
    "ltv_cac",
    "payback_months",
    "nrr",
    "grr",
    "revenue_churn",
    "roi",
    "cost_per_lead",
    "cost_per_qualified_lead",
    "median_lifetime_months",
)


@router.get("/economics", response_class=HTMLResponse)
async def economics(request: Request, channel: str = "", start: str = "", end: str = "") -> HTMLResponse:
    signed_in(request, "reports.read")
    api = backend(request)
    window = {"from": start or None, "to": end or None}
    channels_reply = await api.get("leads", "/channels")
    names = [c["channel"] for c in channels_reply.data] if channels_reply.ok else []
    calls = {"all": api.get("retention", "/economics", channel=channel or None, **window)}
    for i, name in enumerate(names):
        calls[f"c{i}"] = api.get("retention", "/economics", channel=name, **window)
    parts = await gather(**calls)
    overall = parts["all"]
    per_channel = [(name, parts[f"c{i}"].data) for i, name in enumerate(names) if parts[f"c{i}"].ok]
    charts: dict[str, Any] = {}
    if overall.ok:
        data = overall.data
        charts["funnel"] = {
            "type": "bar",
            "labels": [s["stage"] for s in data.get("funnel", [])],
            "series": [{"label": "count", "data": [s["count"] for s in data.get("funnel", [])]}],
        }
        moves = data.get("mrr_movements") or {}
        charts["mrr"] = {
            "type": "bar",
            "labels": list(moves),
            "series": [{"label": "MRR", "data": [float(v) for v in moves.values()]}],
        }
        cohorts = data.get("cohorts") or []
        width = max((len(c.get("retention") or []) for c in cohorts), default=0)
        charts["cohorts"] = {
            "type": "line",
            "labels": [str(i + 1) for i in range(width)],
            "series": [
                {"label": c["cohort"], "data": [float(x) if x is not None else None for x in c.get("retention") or []]}
                for c in cohorts
            ],
        }
        charts["ltv_cac"] = {
            "type": "bar",
            "labels": [name for name, _ in per_channel],
            "series": [
                {"label": "LTV:CAC", "data": [float(d["ltv_cac"]) if d.get("ltv_cac") else 0 for _, d in per_channel]}
            ],
        }
    return render(
        request,
        "economics.html.j2",
        overall=overall.data if overall.ok else None,
        error=overall.message if not overall.ok and not overall.down else "",
        per_channel=per_channel,
        channels=names,
        metrics=METRICS,
        charts=json.dumps(charts),
        filters={"channel": channel, "start": start, "end": end},
        down=down_notices(channels_reply, *parts.values()),
    )


@router.get("/tasks", response_class=HTMLResponse)
async def tasks(request: Request, status: str = "open") -> HTMLResponse:
    session = signed_in(request, "tasks.read")
    api = backend(request)
    # "me" needs a person's token; the bootstrap key (an integration) sees the whole list.
    owner = "me" if session.me.get("actor", {}).get("kind") == "person" else None
    wanted = status if status in ("open", "done", "snoozed", "all") else "open"
    reply = await api.get("nurture", "/tasks", owner=owner, status=wanted, limit=500)
    return render(
        request,
        "tasks.html.j2",
        tasks=reply.data if reply.ok else [],
        error=reply.message if not reply.ok and not reply.down else "",
        task_status=wanted,
        down=down_notices(reply),
    )


@router.get("/sequences", response_class=HTMLResponse)
async def sequences(request: Request) -> HTMLResponse:
    signed_in(request, "sequences.read")
    reply = await backend(request).get("nurture", "/sequences")
    return render(
        request,
        "sequences.html.j2",
        sequences=reply.data if reply.ok else [],
        errors={},
        values={},
        down=down_notices(reply),
    )
