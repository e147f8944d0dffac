"""Money, clock and settings: small values the whole system leans on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.clock import Clock, SimulatedClock, make_clock
from shared.money import Money, quantize
from shared.settings import ServiceSettings


def test_money_rounds_like_accounting_and_refuses_mixed_currencies() -> None:
    assert quantize(Decimal("2.345")) == Decimal("2.34")
    assert quantize(Decimal("2.355")) == Decimal("2.36")
    total = Money(amount=Decimal("10.10"), currency="eur") + Money(amount=Decimal("0.20"), currency="EUR")
    assert total == Money(amount=Decimal("10.30"), currency="EUR")
    with pytest.raises(ValueError, match="cannot add USD to EUR"):
        _ = total + Money(amount=Decimal(1), currency="USD")


def test_simulated_clock_moves_only_forward_and_signals_jumps() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = SimulatedClock(start)
    first, second = clock.watch(), clock.watch()
    assert clock.now() == start and not first.is_set()
    assert clock.advance_to(start + timedelta(days=31))
    assert first.is_set() and second.is_set() and clock.now() == start + timedelta(days=31)
    assert not clock.advance_to(start)
    assert clock.now() == start + timedelta(days=31)
    assert isinstance(make_clock("system"), Clock) and not make_clock("system").simulated


class _Svc(ServiceSettings):
    service_name = "demo"
    default_port = 8099


def test_settings_defaults_and_production_refuses_default_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CLIENTFLOW_DATA_DIR", str(tmp_path))
    settings = _Svc()
    assert settings.port == 8099 and settings.group_id == "demo"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'demo.db'}"
    monkeypatch.setenv("CLIENTFLOW_ENV", "production")
    with pytest.raises(ValueError, match="CLIENTFLOW_API_KEY"):
        _Svc()
    monkeypatch.setenv("CLIENTFLOW_API_KEY", "k" * 32)
    monkeypatch.setenv("CLIENTFLOW_SECRET_KEY", "s" * 32)
    # The master keys that wrap every person's data key: set, and well formed.
    with pytest.raises(ValueError, match="CLIENTFLOW_MASTER_KEYS must be set"):
        _Svc()
    monkeypatch.setenv("CLIENTFLOW_MASTER_KEYS", "2026-12:" + "A" * 40)
    with pytest.raises(ValueError, match="must be 32 bytes"):
        _Svc()
    monkeypatch.setenv("CLIENTFLOW_MASTER_KEYS", "2026-12:" + "A" * 43)
    assert _Svc().environment == "production"
    assert _Svc().master_key_ring().current_id == "2026-12"
