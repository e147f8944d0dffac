"""Estimates the client signs: the digest of a version's content, the signed link's token, when
a link may be used, and the words of the pages (hand-computed cases, no I/O)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.leads.domain import estimates as rules
from services.leads.estimate_texts import TEXTS, direction, text
from shared.signing import sign

NOW = datetime(2031, 3, 3, 9, tzinfo=UTC)
DEAL = uuid.UUID("0b7c2f7e-9f5e-4e0b-8a55-0c8f3f7c8d21")


def content(**changes: object) -> dict:
    values: dict = {
        "title": "Website relaunch",
        "kind": "project",
        "currency": "EUR",
        "lines": [
            {"description": "Design", "hours": Decimal("10"), "amount": Decimal("1000.00")},
            {"description": "Build", "hours": None, "amount": Decimal("2000")},
        ],
        "total": Decimal("3000.00"),
        "monthly_fee": None,
        "included_hours": None,
        "hourly_rate": Decimal("90"),
        "valid_until": NOW + timedelta(days=30),
    }
    values.update(changes)
    return rules.content_of(**values)


def test_the_content_writes_amounts_plainly_and_times_in_utc() -> None:
    written = content(valid_until=datetime(2031, 4, 2, 11, tzinfo=UTC) + timedelta(hours=0))
    assert written["lines"][0] == {"description": "Design", "hours": "10", "amount": "1000"}
    assert written["lines"][1] == {"description": "Build", "hours": None, "amount": "2000"}
    assert written["total"] == "3000" and written["hourly_rate"] == "90" and written["monthly_fee"] is None
    assert written["valid_until"] == "2031-04-02T11:00:00+00:00"


def test_the_digest_is_sha256_of_the_canonical_json_whatever_the_key_order() -> None:
    written = content()
    reordered = dict(reversed(list(written.items())))
    reordered["lines"] = [dict(reversed(list(line.items()))) for line in written["lines"]]
    assert list(reordered) != list(written)
    assert rules.digest_of(reordered) == rules.digest_of(written)
    # By hand: sorted keys, no spaces, UTF-8.
    by_hand = json.dumps(written, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert rules.canonical_json(written) == by_hand
    assert rules.digest_of(written) == hashlib.sha256(by_hand).hexdigest()
    assert len(rules.digest_of(written)) == 64
    # 1000.00 and 1000 are the same amount, so the same content.
    assert rules.digest_of(content(total=Decimal("3000"))) == rules.digest_of(written)


def test_the_digest_changes_when_any_line_or_term_changes() -> None:
    base = rules.digest_of(content())
    changed_lines = [
        [
            {"description": "Design!", "hours": Decimal("10"), "amount": Decimal("1000")},
            {"description": "Build", "amount": Decimal("2000")},
        ],
        [
            {"description": "Design", "hours": Decimal("11"), "amount": Decimal("1000")},
            {"description": "Build", "amount": Decimal("2000")},
        ],
        [
            {"description": "Design", "hours": Decimal("10"), "amount": Decimal("1000.01")},
            {"description": "Build", "amount": Decimal("2000")},
        ],
        [
            {"description": "Build", "amount": Decimal("2000")},
            {"description": "Design", "hours": Decimal("10"), "amount": Decimal("1000")},
        ],
    ]
    digests = {rules.digest_of(content(lines=lines)) for lines in changed_lines}
    assert base not in digests and len(digests) == len(changed_lines)
    assert rules.digest_of(content(valid_until=NOW + timedelta(days=31))) != base
    assert rules.digest_of(content(currency="USD")) != base
    assert rules.digest_of(content(title="Website relaunch v2")) != base


def test_valid_until_defaults_to_the_policy_and_must_be_in_the_future() -> None:
    policy = rules.EstimatePolicy(valid_days=30)
    assert rules.valid_until_for(None, now=NOW, policy=policy) == NOW + timedelta(days=30)
    later = NOW + timedelta(days=3)
    assert rules.valid_until_for(later, now=NOW, policy=policy) == later
    for past in (NOW, NOW - timedelta(seconds=1)):
        with pytest.raises(ValueError, match="valid_until"):
            rules.valid_until_for(past, now=NOW, policy=policy)


def test_the_token_is_shared_signing_over_deal_version_and_expiry() -> None:
    expires = NOW + timedelta(days=30)
    token = rules.acceptance_token("secret", deal_id=DEAL, version=2, expires_at=expires)
    header = sign(body=f"estimate-acceptance:{DEAL}:2".encode(), secret="secret", timestamp=int(expires.timestamp()))
    assert header == f"t={int(expires.timestamp())},v1={token}" and len(token) == 64
    assert rules.token_matches("secret", token, deal_id=DEAL, version=2, expires_at=expires)
    # Another secret, deal, version or expiry: not this token.
    assert not rules.token_matches("other", token, deal_id=DEAL, version=2, expires_at=expires)
    assert not rules.token_matches("secret", token, deal_id=uuid.uuid4(), version=2, expires_at=expires)
    assert not rules.token_matches("secret", token, deal_id=DEAL, version=1, expires_at=expires)
    assert not rules.token_matches("secret", token, deal_id=DEAL, version=2, expires_at=expires + timedelta(days=1))
    assert not rules.token_matches(
        "secret", token[:-1] + ("0" if token[-1] != "0" else "1"), deal_id=DEAL, version=2, expires_at=expires
    )
    assert not rules.token_matches("secret", "ü" * 64, deal_id=DEAL, version=2, expires_at=expires)
    url = rules.acceptance_url("http://127.0.0.1:8001/", secret="secret", deal_id=DEAL, version=2, expires_at=expires)
    assert url == f"http://127.0.0.1:8001/estimates/{DEAL}/accept?v=2&t={token}"


def check(**changes: object) -> rules.LinkCheck:
    values: dict = {
        "signature_ok": True,
        "status": "proposed",
        "signed_via": None,
        "version": 2,
        "latest_version": 2,
        "valid_until": NOW + timedelta(days=1),
    }
    values.update(changes)
    return rules.LinkCheck(**values)


def test_a_link_is_refused_in_order_bad_signature_closed_superseded_expired() -> None:
    state = rules.link_state
    assert state(check(), now=NOW) is rules.LinkState.OPEN
    assert state(check(), now=NOW + timedelta(days=1)) is rules.LinkState.OPEN  # until valid_until itself
    assert state(check(), now=NOW + timedelta(days=1, seconds=1)) is rules.LinkState.EXPIRED
    assert state(check(version=1), now=NOW) is rules.LinkState.SUPERSEDED
    assert state(check(version=1), now=NOW + timedelta(days=5)) is rules.LinkState.SUPERSEDED
    assert state(check(status="lost", version=1), now=NOW) is rules.LinkState.CLOSED
    assert state(check(status="won", signed_via="staff"), now=NOW) is rules.LinkState.CLOSED
    assert state(check(status="won", signed_via="link"), now=NOW) is rules.LinkState.ALREADY_ACCEPTED
    assert state(check(signature_ok=False, status="won"), now=NOW) is rules.LinkState.BAD_SIGNATURE
    assert state(check(valid_until=None), now=NOW) is rules.LinkState.BAD_SIGNATURE


def test_the_name_typed_is_required_and_trimmed() -> None:
    assert rules.accepted_name("  Rahim   Uddin ") == "Rahim Uddin"
    for empty in ("", "   ", None):
        with pytest.raises(ValueError, match="name"):
            rules.accepted_name(empty)
    with pytest.raises(ValueError, match="name"):
        rules.accepted_name("x" * 201)
    with pytest.raises(ValueError, match="name"):
        rules.accepted_name("Rahim\x00Uddin")
    assert rules.accepted_name("রহিম উদ্দিন") == "রহিম উদ্দিন"  # Bengali names are names


def test_the_deposit_is_the_share_of_the_total_or_of_a_retainers_first_month() -> None:
    share = Decimal("0.40")
    assert rules.deposit_amount(kind="project", total=Decimal("3000"), monthly_fee=None, share=share) == Decimal(
        "1200.00"
    )
    assert rules.deposit_amount(
        kind="retainer", total=Decimal("2500"), monthly_fee=Decimal("1999.99"), share=share
    ) == Decimal("800.00")  # 799.996 rounded to cents
    assert rules.percent(Decimal("0.30")) == "30" and rules.percent(Decimal("0.35")) == "35"


def test_every_language_has_every_text_and_persian_reads_right_to_left() -> None:
    assert set(TEXTS) == {"en", "bn", "fa"}
    for language, words in TEXTS.items():
        assert set(words) == set(TEXTS["en"]), language
        assert all(value.strip() for value in words.values()), language
    assert TEXTS["bn"]["accept_button"] != TEXTS["en"]["accept_button"] != TEXTS["fa"]["accept_button"]
    assert direction("fa") == "rtl" and direction("bn") == "ltr" and direction("en") == "ltr"
    assert "2031-04-02" in text("bn", "terms", date="2031-04-02")
    assert text("de", "total") == "Total"  # a language without pages reads English
