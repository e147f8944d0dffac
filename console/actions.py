"""What a person may press (POST, each with its CSRF token): one service call each. A refusal
re-renders the page with the service's message next to the field it names (and what was typed);
success goes back to the page (303)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console import pages
from console.backend import GENERAL, Reply
from console.web import back_to, backend, down_notices, posted, render, signed_in

router = APIRouter()


def _opt(value: Any) -> Any:
    """An empty form field is "not given"."""
    return None if value in (None, "") else value


def _tri(value: Any) -> bool | None:
    return {"yes": True, "no": False}.get(str(value or ""))


async def _lead_failed(request: Request, lead_id: str, form: str, reply: Reply, values: dict[str, Any]) -> HTMLResponse:
    context = await pages.lead_context(request, lead_id)
    errors = {form: reply.errors or {GENERAL: f"the {reply.service} service did not answer; nothing was changed"}}
    status = reply.status if 400 <= reply.status < 500 else 503
    context["down"] = sorted(set(context["down"]) | ({reply.service} if reply.down else set()))
    return render(request, "lead.html.j2", status=status, errors=errors, values={form: values}, **context)


async def _lead_action(
    request: Request, lead_id: str, form: str, reply: Reply, values: dict[str, Any], note: str
) -> Response:
    if reply.ok:
        return back_to(f"/leads/{lead_id}", note=note)
    return await _lead_failed(request, lead_id, form, reply, values)


@router.post("/leads/{lead_id}/qualify")
async def qualify(request: Request, lead_id: str) -> Response:
    signed_in(request, "leads.write")
    form = await posted(request)
    body = {
        "budget": _tri(form.get("budget")),
        "authority": _tri(form.get("authority")),
        "need": _tri(form.get("need")),
        "timeline": _tri(form.get("timeline")),
        "notes": _opt(form.get("notes")),
    }
    reply = await backend(request).post("leads", f"/leads/{lead_id}/qualification", body, fields=tuple(body))
    return await _lead_action(request, lead_id, "qualify", reply, form, "qualified")


def _lines(form: dict[str, Any]) -> list[dict[str, Any]]:
    descriptions = form.get("line_description") or []
    amounts = form.get("line_amount") or []
    hours = form.get("line_hours") or []
    lines = []
    for i, description in enumerate(descriptions):
        amount = amounts[i] if i < len(amounts) else ""
        hour = hours[i] if i < len(hours) else ""
        if not (description or amount or hour):
            continue  # a blank row of the form
        lines.append({"description": description, "amount": amount, "hours": _opt(hour)})
    return lines


@router.post("/leads/{lead_id}/estimate")
async def estimate(request: Request, lead_id: str) -> Response:
    signed_in(request, "deals.write")
    form = await posted(request)
    body = {
        "title": form.get("title", ""),
        "kind": form.get("kind", "project"),
        "currency": (form.get("currency") or "").upper(),
        "monthly_fee": _opt(form.get("monthly_fee")),
        "included_hours": _opt(form.get("included_hours")),
        "hourly_rate": _opt(form.get("hourly_rate")),
        "lines": _lines(form),
    }
    reply = await backend(request).post("leads", f"/leads/{lead_id}/deals", body, fields=tuple(body))
    return await _lead_action(request, lead_id, "estimate", reply, form, "estimate")


@router.post("/leads/{lead_id}/deals/{deal_id}/won")
async def won(request: Request, lead_id: str, deal_id: str) -> Response:
    signed_in(request, "deals.write")
    form = await posted(request)
    reply = await backend(request).post(
        "leads", f"/deals/{deal_id}/won", {"signed_by": form.get("signed_by", "")}, fields=("signed_by", "signed_at")
    )
    return await _lead_action(request, lead_id, f"won-{deal_id}", reply, form, "won")


@router.post("/leads/{lead_id}/deals/{deal_id}/lost")
async def lost(request: Request, lead_id: str, deal_id: str) -> Response:
    signed_in(request, "deals.write")
    form = await posted(request)
    reply = await backend(request).post(
        "leads", f"/deals/{deal_id}/lost", {"reason": form.get("reason", "")}, fields=("reason",)
    )
    return await _lead_action(request, lead_id, f"lost-{deal_id}", reply, form, "lost")


@router.post("/leads/{lead_id}/deals/{deal_id}/change-request")
async def change_request(request: Request, lead_id: str, deal_id: str) -> Response:
    signed_in(request, "deals.write")
    form = await posted(request)
    body = {
        "description": form.get("description", ""),
        "hours": _opt(form.get("hours")),
        "amount": _opt(form.get("amount")),
    }
    reply = await backend(request).post("leads", f"/deals/{deal_id}/change-requests", body, fields=tuple(body))
    return await _lead_action(request, lead_id, f"change-{deal_id}", reply, form, "change")


@router.post("/leads/{lead_id}/takeover")
async def takeover(request: Request, lead_id: str) -> Response:
    session = signed_in(request, "takeover.write")
    form = await posted(request)
    body = {"by": form.get("by") or session.me.get("name", ""), "reason": _opt(form.get("reason"))}
    reply = await backend(request).post("nurture", f"/leads/{lead_id}/takeover", body, fields=tuple(body))
    return await _lead_action(request, lead_id, "takeover", reply, form, "takeover")


@router.post("/leads/{lead_id}/takeover/end")
async def takeover_end(request: Request, lead_id: str) -> Response:
    signed_in(request, "takeover.write")
    form = await posted(request)
    reply = await backend(request).call("nurture", "DELETE", f"/leads/{lead_id}/takeover")
    return await _lead_action(request, lead_id, "takeover", reply, form, "released")


@router.post("/leads/{lead_id}/erase")
async def erase(request: Request, lead_id: str) -> Response:
    signed_in(request, "leads.erase")
    form = await posted(request)
    if form.get("confirm", "").strip().upper() != "ERASE":
        refused = Reply("leads", status=422, errors={"confirm": "type ERASE to confirm: erasing cannot be undone"})
        return await _lead_failed(request, lead_id, "erase", refused, form)
    reply = await backend(request).call("leads", "DELETE", f"/leads/{lead_id}")
    return await _lead_action(request, lead_id, "erase", reply, form, "erased")


@router.post("/leads/{lead_id}/export")
async def export(request: Request, lead_id: str) -> Response:
    """Everything the services hold about the person (right of access): leads gathers it over the
    wire; the export's page shows each service's progress and, once complete, the downloads."""
    signed_in(request, "exports.run")
    form = await posted(request)
    reply = await backend(request).post("leads", f"/leads/{lead_id}/export")
    if reply.ok:
        return RedirectResponse(f"/exports/{reply.data['export_id']}", status_code=303)
    return await _lead_failed(request, lead_id, "export", reply, form)


@router.post("/invoices/{invoice_id}/payment")
async def payment(request: Request, invoice_id: str) -> Response:
    signed_in(request, "payments.write")
    form = await posted(request)
    body = {
        "invoice_id": invoice_id,
        "amount": form.get("amount", ""),
        "currency": (form.get("currency") or "").upper(),
        "method": form.get("method", ""),
        "reference": _opt(form.get("reference")),
    }
    headers = {"Idempotency-Key": form["idempotency_key"]} if form.get("idempotency_key") else None
    reply = await backend(request).post("billing", "/payments", body, fields=tuple(body), headers=headers)
    lead_id = form.get("lead_id", "")
    back = f"/leads/{lead_id}" if lead_id and form.get("from") == "lead" else "/invoices"
    if reply.ok:
        return back_to(back, note="paid")
    if back.startswith("/leads/"):
        return await _lead_failed(request, lead_id, f"pay-{invoice_id}", reply, form)
    context = await pages.invoices_context(request)
    return render(
        request,
        "invoices.html.j2",
        status=reply.status if 400 <= reply.status < 500 else 503,
        errors={
            f"pay-{invoice_id}": reply.errors or {GENERAL: "the billing service did not answer; nothing was changed"}
        },
        values={f"pay-{invoice_id}": form},
        **context,
    )


@router.post("/clients/{lead_id}/cancellation")
async def cancellation(request: Request, lead_id: str) -> Response:
    signed_in(request, "cancellations.write")
    form = await posted(request)
    body = {"reason": form.get("reason", ""), "comment": _opt(form.get("comment"))}
    reply = await backend(request).post("retention", f"/clients/{lead_id}/cancellation", body, fields=tuple(body))
    if reply.ok:
        return RedirectResponse(f"/clients/{lead_id}?cancellation={reply.data['cancellation_id']}", status_code=303)
    return await _client_failed(request, lead_id, "cancel", reply, form)


async def _client_failed(
    request: Request, lead_id: str, form: str, reply: Reply, values: dict[str, Any]
) -> HTMLResponse:
    context = await pages.client_context(request, lead_id)
    context["down"] = sorted(set(context["down"]) | ({reply.service} if reply.down else set()))
    errors = {form: reply.errors or {GENERAL: f"the {reply.service} service did not answer; nothing was changed"}}
    status = reply.status if 400 <= reply.status < 500 else 503
    return render(request, "client.html.j2", status=status, errors=errors, values={form: values}, **context)


@router.post("/clients/{lead_id}/cancellations/{cancellation_id}/{decision}")
async def decide(request: Request, lead_id: str, cancellation_id: str, decision: str) -> Response:
    signed_in(request, "cancellations.write")
    form = await posted(request)
    if decision not in ("accept", "confirm"):
        return render(request, "error.html.j2", status=404, message="no such decision: accept or confirm", down=[])
    reply = await backend(request).post("retention", f"/cancellations/{cancellation_id}/{decision}")
    if reply.ok:
        return back_to(f"/clients/{lead_id}", note="saved" if decision == "accept" else "cancelled")
    return await _client_failed(request, lead_id, "cancel", reply, form)


@router.post("/tasks/{task_id}/done")
async def task_done(request: Request, task_id: str) -> Response:
    signed_in(request, "tasks.write")
    await posted(request)
    reply = await backend(request).post("nurture", f"/tasks/{task_id}/done")
    if reply.ok:
        return back_to("/tasks", note="done")
    return render(
        request,
        "error.html.j2",
        status=reply.status if 400 <= reply.status < 500 else 503,
        message=reply.message or "nurture did not answer",
        down=down_notices(reply),
    )


@router.post("/reviews")
async def run_review(request: Request) -> Response:
    signed_in(request, "reviews.write")
    await posted(request)
    reply = await backend(request).post("retention", "/reviews")
    if reply.ok:
        return back_to("/review", note="review")
    return render(
        request,
        "error.html.j2",
        status=reply.status if 400 <= reply.status < 500 else 503,
        message=reply.message or "retention did not answer",
        down=down_notices(reply),
    )


@router.post("/sequences/{name}")
async def write_sequence(request: Request, name: str) -> Response:
    signed_in(request, "sequences.write")
    form = await posted(request)
    text = form.get("definition", "")
    try:
        definition = json.loads(text)
        reply = (
            await backend(request).call(
                "nurture",
                "PUT",
                f"/sequences/{name}",
                json=definition,
                fields=("definition", "trigger", "steps", "delay", "template", "category"),
            )
            if isinstance(definition, dict)
            else Reply("nurture", status=422, errors={"definition": "the definition must be a JSON object"})
        )
    except ValueError as exc:
        reply = Reply("nurture", status=422, errors={"definition": f"not valid JSON: {exc}"})
    if reply.ok:
        return back_to("/sequences", note="saved")
    listing = await backend(request).get("nurture", "/sequences")
    return render(
        request,
        "sequences.html.j2",
        status=reply.status if 400 <= reply.status < 500 else 503,
        sequences=listing.data if listing.ok else [],
        errors={name: reply.errors or {GENERAL: "nurture did not answer; nothing was changed"}},
        values={name: text},
        down=down_notices(listing, reply),
    )
