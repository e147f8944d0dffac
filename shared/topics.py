"""Topic names (docs/design.md, Topics and event types). They are a public contract: never rename one."""

LEADS = "leads"
DEALS = "deals"
ENGAGEMENT = "engagement"
PAYMENTS = "payments"
CANCELLATIONS = "cancellations"
RETENTION = "retention"
CLOCK = "clock"
# People and their tokens (access): the leads service owns the registry, every service folds it.
PEOPLE = "people"
# Work for a person, raised by any service and kept by nurture (the one task list).
TASKS = "tasks"
# Every person's data key, wrapped (crypto-shredding): compacted, folded by every service.
KEYS = "keys"

# A person's data gathered on request (right of access): leads asks, every service answers.
EXPORTS = "exports"

BUSINESS_TOPICS: tuple[str, ...] = (LEADS, DEALS, ENGAGEMENT, PAYMENTS, CANCELLATIONS, RETENTION)
ALL_TOPICS: tuple[str, ...] = (*BUSINESS_TOPICS, TASKS, PEOPLE, KEYS, EXPORTS, CLOCK)
# Topics whose last event per key is the whole state (kept forever, compacted on real Kafka).
COMPACTED_TOPICS: frozenset[str] = frozenset({PEOPLE, KEYS})

DLQ_SUFFIX = ".dlq"


def dlq(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return f"{topic}{DLQ_SUFFIX}"


def all_topics_with_dlq() -> list[str]:
    return [t for topic in ALL_TOPICS for t in (topic, dlq(topic))]
