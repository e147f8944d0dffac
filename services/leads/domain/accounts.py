"""Company accounts: which people belong to one company.

Two people are of one account when they write from the same company domain (a work address:
free-mail domains say nothing of a company, ``dedupe.FREE_MAIL``) AND give the same company
name, normalised (case, punctuation and legal forms such as Ltd, GmbH or Inc do not count:
``returning.normalise_company``). A domain alone is not enough (a holding's mail server serves
several companies), nor a name alone ("Acme" is many companies). A person with a free-mail
address or no company name belongs to no account.

An account links people; it never merges them. Dedupe (``dedupe``) decides whether a capture
is a person we know; a colleague at the same company is another person of the same account.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.leads.domain.dedupe import company_domain
from services.leads.domain.returning import normalise_company


@dataclass(frozen=True)
class AccountKey:
    """What identifies a company account: its domain and its normalised name."""

    domain: str
    name_key: str


def account_key(email: str | None, company: str | None) -> AccountKey | None:
    """The account a person with this address and company name belongs to; None when the
    address is free mail (or missing) or the company name says nothing once normalised."""
    if not email:
        return None
    domain = company_domain(email)
    name_key = normalise_company(company)
    if domain is None or name_key is None:
        return None
    return AccountKey(domain=domain, name_key=name_key)
