"""Retention of data, the parts without a broker or database: its settings refuse nonsense at
start-up, naming the variable, and each topic's configs follow the design."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.leads.settings import Settings as LeadsSettings
from services.nurture.settings import Settings as NurtureSettings
from shared import topics
from shared.broker import COMPACTED_TOPIC_CONFIGS, DAY_MS, topic_configs


@pytest.mark.parametrize(
    ("variable", "settings"),
    [
        ("CLIENTFLOW_AUDIT_RETENTION_DAYS", NurtureSettings),
        ("CLIENTFLOW_DEAD_LETTER_RETENTION_DAYS", NurtureSettings),
        ("LEADS_DISQUALIFIED_RETENTION_DAYS", LeadsSettings),
        ("LEADS_LOST_RETENTION_DAYS", LeadsSettings),
    ],
)
@pytest.mark.parametrize("value", ["0", "-5", "36500", "a year"])
def test_a_retention_of_nothing_or_of_ages_is_refused_at_start_up(
    variable: str, settings: type, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        settings()
    assert variable.lower().removeprefix("leads_") in str(refused.value).lower()


def test_retention_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = LeadsSettings()
    assert (defaults.audit_retention_days, defaults.dead_letter_retention_days) == (400, 30)
    assert (defaults.disqualified_retention_days, defaults.lost_retention_days) == (365, 730)
    for variable, value in {
        "CLIENTFLOW_AUDIT_RETENTION_DAYS": "500",
        "CLIENTFLOW_DEAD_LETTER_RETENTION_DAYS": "14",
        "LEADS_DISQUALIFIED_RETENTION_DAYS": "90",
        "LEADS_LOST_RETENTION_DAYS": "180",
    }.items():
        monkeypatch.setenv(variable, value)
    read = LeadsSettings()
    assert (read.audit_retention_days, read.dead_letter_retention_days) == (500, 14)
    assert (read.disqualified_retention_days, read.lost_retention_days) == (90, 180)
    assert NurtureSettings().audit_retention_days == 500


def test_topic_configs() -> None:
    assert topic_configs("leads.dlq", dead_letter_retention_days=30) == {
        "cleanup.policy": "delete",
        "retention.ms": str(30 * DAY_MS),
    }
    assert topic_configs("leads.dlq") == {}  # no setting given: the broker's (a test's own topics)
    for name in topics.COMPACTED_TOPICS:
        assert topic_configs(name, dead_letter_retention_days=30) == COMPACTED_TOPIC_CONFIGS
        # a dead letter of a compacted topic is a dead letter: kept as long as the others
        assert topic_configs(topics.dlq(name), dead_letter_retention_days=30)["retention.ms"] == str(30 * DAY_MS)
    assert topic_configs("exports") == {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
    for name in (*topics.BUSINESS_TOPICS, topics.TASKS, topics.CLOCK):
        assert topic_configs(name, dead_letter_retention_days=30) == {}, name
