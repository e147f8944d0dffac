"""Returning clients the agency once let go: is a new lead the same person or company as a
client it terminated, and what an estimate for them costs.

- **Same person or company**: the same normalised e-mail; else the same company domain of a
  work address (free-mail domains say nothing of a company, ``dedupe.FREE_MAIL``); else the same
  company name, normalised (case, punctuation and legal suffixes such as Ltd, GmbH or Inc do
  not count).
- **Surcharge**: a multiplier (``LEADS_RETURNING_SURCHARGE``, 3 by default, 2 to 10). An
  estimate for a returning lead gets one more scope line, "Returning-client surcharge (x3)",
  of (multiplier - 1) x the lines' total, so the quote is multiplier x; a retainer's monthly fee
  is multiplied too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from services.leads.domain.dedupe import company_domain, normalise_email
from shared.money import minor_units

RED_FLAG = "terminated_before"
MIN_SURCHARGE, MAX_SURCHARGE = Decimal(2), Decimal(10)
MatchedBy = Literal["email", "domain", "company"]

# Legal forms that do not make two companies different ("Acme Ltd" is "ACME").
_LEGAL = frozenset(
    {
        "ltd",
        "limited",
        "llc",
        "llp",
        "inc",
        "incorporated",
        "corp",
        "corporation",
        "co",
        "company",
        "plc",
        "gmbh",
        "ag",
        "sa",
        "sarl",
        "srl",
        "bv",
        "nv",
        "oy",
        "ab",
        "as",
        "pvt",
        "private",
        "pty",
        "the",
    }
)


def email_hash(email: str) -> str:
    """SHA-256 of the normalised address: enough to know the person again, nothing to read."""
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


def normalise_company(name: str | None) -> str | None:
    """A company name as compared: words only, case-folded, without legal forms; None when
    nothing is left."""
    if not name:
        return None
    words = [w for w in re.findall(r"\w+", name.casefold()) if w not in _LEGAL]
    return " ".join(words) or None


@dataclass(frozen=True)
class Identity:
    """What identifies a person and their company for the returning check."""

    email: str | None  # SHA-256 of the normalised address (``email_hash``): matched, not kept
    domain: str | None  # a work address's domain; None for free mail
    company: str | None  # normalised name

    @classmethod
    def of(cls, *, email: str | None, company: str | None) -> Identity:
        return cls(
            email=email_hash(email) if email else None,
            domain=company_domain(email) if email else None,
            company=normalise_company(company),
        )


@dataclass(frozen=True)
class Terminated:
    """A client the agency let go, as leads remembers it."""

    lead_id: Any
    identity: Identity
    reason: str
    terminated_at: datetime


def same_client(new: Identity, known: Iterable[Terminated]) -> tuple[Terminated, MatchedBy] | None:
    """The terminated client a new lead is (by e-mail, else company domain, else company
    name), and what matched; None when it is nobody the agency let go."""
    known = list(known)
    fields: tuple[MatchedBy, ...] = ("email", "domain", "company")
    for field in fields:
        value = getattr(new, field)
        if value is None:
            continue
        for t in known:
            if getattr(t.identity, field) == value:
                return t, field
    return None


def evidence(match: Terminated, matched_by: MatchedBy) -> str:
    """The red flag's evidence: the earlier lead, why and when it was let go, what matched."""
    return (
        f"earlier lead {match.lead_id} was terminated by the agency on {match.terminated_at:%Y-%m-%d}"
        f" (reason {match.reason}); same {matched_by}"
    )


def check_multiplier(multiplier: Decimal) -> Decimal:
    """The surcharge multiplier, refused outside [2, 10]."""
    if not MIN_SURCHARGE <= multiplier <= MAX_SURCHARGE:
        raise ValueError(f"the returning-client surcharge must be between 2 and 10, not {multiplier}")
    return multiplier


def surcharge_text(multiplier: Decimal) -> str:
    return f"Returning-client surcharge (x{format(multiplier.normalize(), 'f')})"


def _in(currency: str, value: Decimal) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_EVEN)


def surcharged(
    *, lines_total: Decimal, monthly_fee: Decimal | None, multiplier: Decimal, currency: str
) -> tuple[Decimal, Decimal | None]:
    """The surcharge line's amount ((multiplier - 1) x the lines' total) and the monthly fee
    multiplied (a retainer's), in the currency's minor units."""
    line = _in(currency, (multiplier - 1) * lines_total)
    fee = _in(currency, monthly_fee * multiplier) if monthly_fee is not None else None
    return line, fee
