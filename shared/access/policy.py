"""Who may do what: the permissions routes ask for and the roles that hold them.

Role names are part of the contract (docs/design.md, Access). Each route names one permission (``need``);
this table says which roles hold it. ``clientflow docs`` writes the whole table, route by route,
to docs/permissions.md, and a test walks every route of every service with every role.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.events import ROLES

ADMIN, SALES, FINANCE, SUCCESS, VIEWER = ROLES
STAFF = (ADMIN, SALES, FINANCE, SUCCESS)  # everyone who may see a person


@dataclass(frozen=True)
class Permission:
    name: str
    roles: tuple[str, ...]
    description: str

    def __str__(self) -> str:
        return self.name


_ALL: dict[str, Permission] = {}


def _p(name: str, roles: Iterable[str], description: str) -> Permission:
    roles = tuple(r for r in ROLES if r in set(roles) | {ADMIN})  # admin holds everything
    permission = Permission(name, roles, description)
    _ALL[name] = permission
    return permission


# Aggregates: no person in them, so a viewer reads them too.
REPORTS_READ = _p("reports.read", ROLES, "aggregate figures: funnel, channels, economics, summaries")
SELF_READ = _p("self.read", ROLES, "who am I: one's own person, role and permissions")
METRICS_READ = _p("metrics.read", ROLES, "Prometheus metrics (when CLIENTFLOW_PROTECT_METRICS is set)")

# Leads and the sale.
LEADS_CAPTURE = _p("leads.capture", [SALES], "capture a lead (POST /leads): a web form's integration token")
LEADS_IMPORT = _p("leads.import", [SALES], "import a CSV of leads")
LEADS_READ = _p("leads.read", STAFF, "read leads and deals, with the people in them")
LEADS_WRITE = _p("leads.write", [SALES], "qualify, flag, move, merge leads")
LEADS_ERASE = _p("leads.erase", [], "erase a person everywhere")
EXPORTS_RUN = _p(
    "exports.run", [], "export everything the services hold about a person and download it (right of access)"
)
ICP_READ = _p("icp.read", STAFF, "read the ideal client profile")
ICP_WRITE = _p("icp.write", [], "replace the ideal client profile")
DEALS_WRITE = _p("deals.write", [SALES], "write estimates, mark deals won or lost, request changes")
SPEND_WRITE = _p("spend.write", [SALES], "record spend on a channel")
LEADS_ASSIGN = _p("leads.assign", [SALES], "give a lead an owner or put it back in the pool")
ACTIVITIES_WRITE = _p("activities.write", [SALES, SUCCESS], "log calls, meetings, e-mails and notes on a lead")
TEAM_READ = _p(
    "team.read", [SALES, SUCCESS, FINANCE], "the sales team's set-up and figures (a rep sees only their own figures)"
)
TEAM_MANAGE = _p("team.manage", [], "assignment rules, capacities, quotas and the commission plan")
PEOPLE_MANAGE = _p("people.manage", [], "add, change and disable people; create and revoke any token")

# Nurture.
MESSAGES_READ = _p("messages.read", [SALES, SUCCESS], "read the e-mails sent to a person")
TAKEOVER_WRITE = _p("takeover.write", [SALES, SUCCESS], "start and end a human takeover")
SEQUENCES_READ = _p("sequences.read", STAFF, "read the nurture sequences")
SEQUENCES_WRITE = _p("sequences.write", [], "change a nurture sequence")
FEEDBACK_WRITE = _p("feedback.write", [SUCCESS], "record a client's feedback by hand")
MAIL_WEBHOOKS = _p("mail.webhooks", [], "the mail provider's bounce and inbound-reply webhooks")
TASKS_READ = _p("tasks.read", STAFF, "read tasks")
TASKS_WRITE = _p("tasks.write", STAFF, "close tasks")

# Billing.
INVOICES_READ = _p("invoices.read", STAFF, "read invoices, credit notes, change orders and work authorization")
INVOICES_WRITE = _p("invoices.write", [FINANCE], "issue project invoices and credit notes, void invoices")
PAYMENTS_WRITE = _p("payments.write", [FINANCE], "record a payment by hand")
SUBSCRIPTIONS_READ = _p("subscriptions.read", [FINANCE, SUCCESS, SALES], "read subscriptions")
SUBSCRIPTIONS_WRITE = _p("subscriptions.write", [FINANCE], "resume a paused subscription")
CHANGE_ORDERS_WRITE = _p("change_orders.write", [SALES, FINANCE], "approve, reject and finish change orders")
TIME_WRITE = _p("time.write", [FINANCE, SUCCESS], "log hours against a retainer")
PRICES_WRITE = _p("prices.write", [FINANCE], "announce a price change")
MONEY_REPORTS_READ = _p("money_reports.read", [FINANCE], "revenue leaked per client (names clients)")
RATES_WRITE = _p("rates.write", [FINANCE], "set the exchange rates the economics convert with")

# Retention.
CLIENTS_READ = _p("clients.read", STAFF, "read clients: health, tier, cancellations, the latest review")
CANCELLATIONS_WRITE = _p("cancellations.write", [SUCCESS], "run the cancellation flow and its save offers")
REVIEWS_WRITE = _p("reviews.write", [SUCCESS], "run a tier review")
REFERRALS_WRITE = _p("referrals.write", [SUCCESS], "record a referral")
TERMINATIONS_WRITE = _p(
    "terminations.write", [SUCCESS], "end a relationship on the agency's side (notice, offboarding, final invoice)"
)
NOTES_READ = _p("notes.read", [SUCCESS, SALES], "read the notes kept on a client (personal data)")
NOTES_WRITE = _p("notes.write", [SUCCESS, SALES], "add a note (with tags) on a client")
TIERS_WRITE = _p("tiers.write", [], "set or remove a client's tier by hand")

# Consent (nurture).
CONSENT_READ = _p("consent.read", [SUCCESS], "read a person's consent history")
CONSENT_WRITE = _p(
    "consent.write", [SUCCESS], "record consent a person gave or withdrew to staff (source `staff`, audited)"
)

# Every service.
AUDIT_READ = _p("audit.read", [], "read the audit trail")


def permissions() -> dict[str, Permission]:
    """Every permission by name."""
    return dict(_ALL)


def permission(name: str) -> Permission:
    """The permission called ``name``; KeyError names what exists."""
    try:
        return _ALL[name]
    except KeyError:
        raise KeyError(f"no permission {name!r}; there are: {', '.join(sorted(_ALL))}") from None


def may(role: str | None, wanted: Permission, scopes: Iterable[str] = ()) -> bool:
    """True when ``role`` holds ``wanted`` and, for a token narrowed to scopes, it is one of them."""
    if role not in wanted.roles:
        return False
    narrowed = tuple(scopes)
    # Any working token may ask who it is, scoped or not (the CLI checks a new token that way).
    return not narrowed or wanted.name in narrowed or wanted.name == "self.read"
