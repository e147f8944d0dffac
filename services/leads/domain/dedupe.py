"""Dedupe: when a capture is about a person we already know.

A capture is the known lead with the same normalised email (lower case, no ``+tag``, Gmail
without dots), else with the same email as written; else, for a work address, the lead of the
same name at the same company domain: the person wrote from another address of their company.
A colleague (another name) is a new lead of the same company, as a CRM keeps contacts, and
free-mail domains say nothing of a company. An erased person who writes again is a new lead:
we kept nothing of them to match.

Dedupe never merges two different people: a colleague (another address and another name at the
same company) stays a lead of their own, linked to the first by the company account
(``accounts``: same work domain and same normalised company name), never merged into it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, Protocol, TypeVar

MatchedBy = Literal["email", "company_domain"]

# Same-company leads a capture compares names with: the company's first leads, in capture
# order. It bounds the comparison for a company with thousands of leads.
COMPANY_CANDIDATES = 50

FREE_MAIL = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "icloud.com",
        "me.com",
        "proton.me",
        "protonmail.com",
        "aol.com",
        "gmx.com",
        "gmx.de",
        "mail.com",
        "yandex.ru",
        "web.de",
        "msn.com",
        "hey.com",
        "fastmail.com",
        "zoho.com",
    }
)


class Named(Protocol):
    @property
    def name(self) -> str | None: ...


N = TypeVar("N", bound=Named)


def normalise_email(email: str) -> str:
    """The dedupe key of an address: lower case, no ``+tag``; Gmail also ignores dots."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in ("gmail.com", "googlemail.com"):
        domain = "gmail.com"
        local = local.replace(".", "")
    return f"{local}@{domain}"


def normalise_name(name: str) -> str:
    """Names compared for dedupe: case, spacing and punctuation do not count."""
    return " ".join(re.findall(r"\w+", name.casefold()))


def email_domain(email: str) -> str:
    return email.strip().lower().rsplit("@", 1)[-1]


def company_domain(email: str) -> str | None:
    """The company's domain from a work address; free-mail addresses say nothing of a company."""
    domain = email_domain(email)
    if domain.startswith("www."):
        domain = domain[4:]
    return None if domain in FREE_MAIL else domain


def same_person(name: str, colleagues: Iterable[N]) -> N | None:
    """The first of a company's leads (in capture order) with ``name``: the same person, who
    wrote from another address of their company."""
    wanted = normalise_name(name)
    return next((c for c in colleagues if c.name and normalise_name(c.name) == wanted), None)
