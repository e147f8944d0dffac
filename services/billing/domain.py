"""Pure rules of billing: deposits, invoice numbers, payment application, subscription states.

No I/O and no clock calls: every function takes values (including "now") and returns decisions.
Money is always ``Decimal``, rounded to cents with banker's rounding (``shared.money.quantize``).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from shared.errors import Conflict, DomainError, Invalid
from shared.money import quantize

ZERO = Decimal("0.00")

INVOICE_KINDS = ("deposit", "milestone", "final", "subscription", "change_order", "overage")
INVOICE_STATUSES = ("open", "paid", "void")
SUBSCRIPTION_STATUSES = ("pending", "active", "paused", "cancelled")
# Manual payments name how the money came in. A closed list keeps the metrics' label set small
# and catches typos ("bank transfer" vs "bank_transfer") before they split the reports.
PAYMENT_METHODS = frozenset({"bank_transfer", "card", "cash", "cheque", "direct_debit", "paypal", "other"})


# --------------------------------------------------------------------------- deposits


def deposit_amount(
    *, kind: str, total: Decimal, monthly_fee: Decimal | None, deposit_share: Decimal
) -> Decimal:
    """The deposit asked before work starts, rounded to cents.

    - a project: ``total x deposit_share`` (the share of the whole signed estimate);
    - a retainer: ``monthly_fee x deposit_share``: the deposit is a share of the *first month*,
      not of the estimate's total (which may add one-off setup lines), because a retainer is
      a monthly commitment and the later monthly invoices bill the rest.

    A share of 0 gives 0: the deal needs no deposit and may start at once.
    """
    if not Decimal(0) <= deposit_share <= Decimal(1):
        raise Invalid(f"deposit_share must be between 0 and 1, got {deposit_share}")
    if kind == "project":
        base = total
    elif kind == "retainer":
        if monthly_fee is None:
            raise Invalid("a retainer needs monthly_fee to compute its deposit")
        base = monthly_fee
    else:
        raise Invalid(f"unknown deal kind {kind!r}: expected project or retainer")
    if base < 0:
        raise Invalid(f"the deposit base must not be negative, got {base}")
    return quantize(base * deposit_share)


def percent(share: Decimal) -> str:
    """``Decimal("0.30")`` as ``"30"`` for invoice text (no exponent, no trailing zeros)."""
    return format((share * 100).normalize(), "f")


def deposit_line(*, kind: str, title: str, deposit_share: Decimal) -> str:
    base = "the first month" if kind == "retainer" else "the estimate"
    return f"Deposit: {percent(deposit_share)}% of {base} ({title})"


# --------------------------------------------------------------------------- invoice numbers


def invoice_number(year: int, sequence: int) -> str:
    """``2026-000042``: sequential per year; the year restarts the sequence at 1."""
    if sequence < 1:
        raise ValueError("invoice sequences start at 1")
    return f"{year:04d}-{sequence:06d}"


def next_sequence(last: int) -> int:
    """The number after ``last``; a counter row holds ``last`` per year (0 before the first)."""
    return last + 1


def due_date(issued_at: datetime, *, days: int) -> datetime:
    return issued_at + timedelta(days=days)


# --------------------------------------------------------------------------- payments


@dataclass(frozen=True)
class PaymentApplication:
    """What one payment does to one invoice."""

    applied: Decimal  # the part that pays the invoice
    credited: Decimal  # the surplus, credited to the client's balance in the same currency
    amount_paid: Decimal  # the invoice's total paid after this payment
    amount_due: Decimal
    status: str
    settles: bool  # this payment is the one that made the invoice fully paid


def amount_due(amount: Decimal, amount_paid: Decimal) -> Decimal:
    return max(amount - amount_paid, ZERO)


def invoice_status(*, amount: Decimal, amount_paid: Decimal, voided: bool) -> str:
    if voided:
        return "void"
    return "paid" if amount_paid >= amount else "open"


def apply_payment(
    *,
    invoice_amount: Decimal,
    invoice_currency: str,
    already_paid: Decimal,
    status: str,
    amount: Decimal,
    currency: str,
) -> PaymentApplication:
    """Apply a payment to an invoice: partial payments add up; a surplus becomes credit.

    Refuses (with nothing changed) a payment to a void invoice, in another currency, or of
    zero, negative or sub-cent amount. Paying an already paid invoice is accepted: the money
    was received, so all of it becomes credit rather than being turned away.
    """
    if status == "void":
        raise Conflict("the invoice is void: it can no longer be paid")
    if currency != invoice_currency:
        raise Invalid(f"payment currency {currency} differs from the invoice's {invoice_currency}")
    if amount <= 0:
        raise Invalid("amount must be greater than zero")
    if quantize(amount) != amount:
        raise Invalid("amount must have at most two decimal places")
    due = amount_due(invoice_amount, already_paid)
    applied = min(amount, due)
    paid = already_paid + applied
    new_status = invoice_status(amount=invoice_amount, amount_paid=paid, voided=False)
    return PaymentApplication(
        applied=applied,
        credited=amount - applied,
        amount_paid=paid,
        amount_due=amount_due(invoice_amount, paid),
        status=new_status,
        settles=status != "paid" and new_status == "paid",
    )


def days_late(*, due_at: datetime, paid_at: datetime) -> int:
    """Whole days after the due date; 0 when paid on time."""
    return max((paid_at - due_at).days, 0)


def void_check(*, status: str, amount_paid: Decimal) -> None:
    """Only an open invoice with nothing paid may be voided (money received must be refunded,
    not voided away)."""
    if status == "paid":
        raise Conflict("a paid invoice cannot be voided")
    if amount_paid > 0:
        raise Conflict("a partly paid invoice cannot be voided: refund the payments first")


# --------------------------------------------------------------------------- subscriptions

# Which states each action may leave from. Cancelling a cancelled subscription is a no-op,
# handled by the caller, so it is not listed.
_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "activate": (frozenset({"pending"}), "active"),
    "pause": (frozenset({"active"}), "paused"),
    "resume": (frozenset({"paused"}), "active"),
    "cancel": (frozenset({"pending", "active", "paused"}), "cancelled"),
}


def transition(status: str, action: str) -> str:
    """The subscription status after ``action``; Conflict when it may not happen from here."""
    sources, target = _TRANSITIONS[action]
    if status not in sources:
        raise Conflict(f"cannot {action} a subscription that is {status}")
    return target


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus whole calendar months, the day clamped to the month's end (Jan 31 + 1 is
    Feb 28/29), as billing periods are counted."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def amount_open(amount: Decimal, amount_paid: Decimal, amount_credited: Decimal) -> Decimal:
    """What the client still owes: credit notes reduce it as payments do."""
    return max(amount - amount_paid - amount_credited, ZERO)


# --------------------------------------------------------------------------- billing periods


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period_after(start: datetime, *, anchor: datetime, calendar_aligned: bool) -> datetime:
    """The end of the billing period that begins at ``start``.

    Calendar-aligned periods end on the 1st of the next month (as Stripe's billing cycle
    anchor on the 1st); otherwise a period is one month from the subscription's anchor,
    counted from the anchor (not from ``start``) so Jan 31 -> Feb 28 -> Mar 31 does not drift.
    """
    if calendar_aligned:
        return add_months(month_start(start), 1)
    months = (start.year - anchor.year) * 12 + start.month - anchor.month
    end = add_months(anchor, months + 1)
    while end <= start:  # start fell after the anchor's day in its month
        months += 1
        end = add_months(anchor, months + 1)
    return end


def prorate(amount: Decimal, *, period: tuple[datetime, datetime], used: tuple[datetime, datetime]) -> Decimal:
    """``amount`` for the part ``used`` of ``period``, by the second (Stripe prorates by the
    second too), rounded to cents. A used span outside the period counts nothing."""
    start, end = period
    if end <= start:
        raise ValueError("a billing period ends after it starts")
    lo, hi = max(start, used[0]), min(end, used[1])
    if hi <= lo:
        return ZERO
    return quantize(amount * Decimal((hi - lo).total_seconds()) / Decimal((end - start).total_seconds()))


def full_month(period: tuple[datetime, datetime], *, calendar_aligned: bool) -> tuple[datetime, datetime]:
    """The whole month a (possibly partial) period belongs to, the base proration divides by."""
    start, end = period
    if calendar_aligned:
        return month_start(start), add_months(month_start(start), 1)
    return add_months(end, -1), end


def describe_period(start: datetime, end: datetime) -> str:
    last = end - timedelta(seconds=1)
    return f"{start:%d %b %Y} - {last:%d %b %Y}"


def overage(*, used: Decimal, included: Decimal | None, rate: Decimal | None) -> tuple[Decimal, Decimal]:
    """Hours over the included ones and their price at ``rate`` (0 without a rate)."""
    over = max(used - (included or Decimal(0)), Decimal(0))
    return over, quantize(over * rate) if rate is not None else ZERO


def utilisation(*, used: Decimal, included: Decimal | None) -> Decimal | None:
    """Share of the included hours used (1 = all; under 1 is under-use, over 1 overuse)."""
    if not included:
        return None
    return (used / included).quantize(Decimal("0.0001"))


# --------------------------------------------------------------------------- pause


def billed_fee(*, status: str, monthly_fee: Decimal, paused_fee: Decimal | None) -> Decimal:
    """What one period costs: the low pause fee while paused, the monthly fee otherwise."""
    if status == "paused":
        return paused_fee if paused_fee is not None else ZERO
    return monthly_fee


def pause_ends(*, paused_until: datetime | None, period_start: datetime) -> bool:
    """A pause with an end resumes the subscription for the first period starting at or after it."""
    return paused_until is not None and paused_until <= period_start


def in_mrr(status: str) -> bool:
    """Only an active subscription counts in MRR: a paused one is not churn and not revenue."""
    return status == "active"


# --------------------------------------------------------------------------- price changes


def new_price(*, old: Decimal, percent_change: Decimal | None, price: Decimal | None) -> Decimal:
    if (percent_change is None) == (price is None):
        raise Invalid("give either percent or new_price, not both and not neither")
    if price is not None:
        if price < 0:
            raise Invalid("new_price must not be negative")
        return quantize(price)
    assert percent_change is not None
    if percent_change <= -100:
        raise Invalid("percent must be above -100")
    return quantize(old * (Decimal(100) + percent_change) / Decimal(100))


def notice_dates(*, effective_at: datetime, now: datetime, days_before: list[int]) -> list[datetime]:
    """When clients are told (30 and 7 days before by default): those still ahead, and now
    when every one of them has passed (a late notice is still a notice)."""
    if effective_at <= now:
        raise Invalid(f"effective_at {effective_at.isoformat()} is not in the future: a price change in the past is refused")
    ahead = sorted(effective_at - timedelta(days=d) for d in days_before if effective_at - timedelta(days=d) > now)
    return ahead or [now]


def mrr_movement(*, old: Decimal, new: Decimal) -> str | None:
    if new > old:
        return "expansion"
    if new < old:
        return "contraction"
    return None


# --------------------------------------------------------------------------- dunning

DUNNING_STATES = ("retrying", "grace", "overdue", "warning", "blocked", "cancelled", "clear")


@dataclass(frozen=True)
class Ladder:
    """Kill Bill style overdue ladder, in days past due (or past the grace period's end)."""

    warning_days: int = 10
    blocked_days: int = 14
    cancelled_days: int = 21
    retry_days: tuple[int, ...] = (1, 3, 5, 7)
    grace_days: int = 14
    best_extra_days: int = 7

    def extra(self, tier: str | None) -> int:
        """A ``best`` client gets a longer grace at every step."""
        return self.best_extra_days if tier == "best" else 0


def classify_decline(code: str | None, *, hard_codes: frozenset[str], grace_codes: frozenset[str]) -> str:
    """``hard`` (never retried: stolen card, closed account), ``grace`` (expired card: the
    client must update it; service kept meanwhile) or ``soft`` (retried on the schedule)."""
    if code in grace_codes:
        return "grace"
    if code in hard_codes:
        return "hard"
    return "soft"


def next_retry_at(*, first_failed_at: datetime, retries_done: int, ladder: Ladder) -> datetime | None:
    """When the next retry is due, counted from the first failure (1, 3, 5, 7 days after it
    by default, as Stripe's and Kill Bill's examples); None when the schedule is used up."""
    if retries_done >= len(ladder.retry_days):
        return None
    return first_failed_at + timedelta(days=ladder.retry_days[retries_done])


def dunning_state(
    *,
    now: datetime,
    due_at: datetime,
    grace_until: datetime | None,
    retrying: bool,
    tier: str | None,
    ladder: Ladder,
) -> str | None:
    """Where an unpaid invoice stands. The ladder counts from the due date, or from the end
    of a grace period (an expired card keeps service until then). None: nothing to chase."""
    if grace_until is not None and now < grace_until:
        return "grace"
    start = max(due_at, grace_until) if grace_until is not None else due_at
    days = (now - start).days if now > start else -1
    extra = ladder.extra(tier)
    if days >= ladder.cancelled_days + extra:
        return "cancelled"
    if days >= ladder.blocked_days + extra:
        return "blocked"
    if days >= ladder.warning_days + extra:
        return "warning"
    if retrying:
        return "retrying"
    if now > due_at and days >= 1:
        return "overdue"
    return None


def days_overdue(*, due_at: datetime, now: datetime) -> int:
    return max((now - due_at).days, 0)


# --------------------------------------------------------------------------- projects


def remaining_to_invoice(*, total: Decimal, invoiced: Decimal) -> Decimal:
    return max(quantize(total) - quantize(invoiced), ZERO)


def milestone_check(*, amount: Decimal, remaining: Decimal) -> None:
    if amount <= 0:
        raise Invalid("amount must be greater than zero")
    if quantize(amount) != amount:
        raise Invalid("amount must have at most two decimal places")
    if amount > remaining:
        raise Invalid(f"amount {amount} is more than what remains to invoice on the project ({remaining})")


# --------------------------------------------------------------------------- credit notes


@dataclass(frozen=True)
class CreditSplit:
    """How a credit note of ``amount`` lands: first it lowers what is still due, then the
    paid part goes back to the client as a refund or as credit on their balance."""

    reduces_due: Decimal
    refunded: Decimal
    credited: Decimal


def split_credit(
    *, amount: Decimal, invoice_amount: Decimal, paid: Decimal, credited_before: Decimal, refund: bool
) -> CreditSplit:
    if amount <= 0:
        raise Invalid("amount must be greater than zero")
    if quantize(amount) != amount:
        raise Invalid("amount must have at most two decimal places")
    creditable = invoice_amount - credited_before
    if amount > creditable:
        raise Invalid(f"amount {amount} is more than the invoice can still be credited ({quantize(creditable)})")
    due = amount_open(invoice_amount, paid, credited_before)
    reduces = min(amount, due)
    rest = amount - reduces
    return CreditSplit(
        reduces_due=reduces, refunded=rest if refund else ZERO, credited=ZERO if refund else rest
    )


# --------------------------------------------------------------------------- webhook signatures
# The scheme is plumbing shared with nurture's mail webhooks; these names stay for billing's callers.
from shared.signing import SIGNATURE_HEADER, BadSignature, sign, verify_signature  # noqa: E402, F401
