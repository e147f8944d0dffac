"""Reading every topic as an outsider would: a plain Kafka consumer from offset 0 of every topic
and every dead-letter topic, looking for a person's values in clear text and in any form they
can be decoded from (JSON escapes, base64 and base64url, hex, and the sealed fields opened with
every key the ``keys`` topic still holds, as compaction leaves it: the last record per key id)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.exceptions import InvalidTag

from shared import topics
from shared.broker import read_to_end
from shared.crypto import MasterKeys, open_sealed
from shared.events import Envelope, PersonKeyCreated

TOKEN = re.compile(rb"[A-Za-z0-9+/_=-]{16,}")


@dataclass
class TopicScan:
    records: int = 0
    topics: int = 0
    sealed: int = 0  # events with sealed personal fields
    opened: int = 0  # of those, opened with a key the keys topic still holds
    unreadable: int = 0  # sealed events whose key is destroyed (or was never there)
    live_keys: int = 0
    destroyed_keys: int = 0
    superseded: int = 0  # wrapped keys followed by their destroyed record (compaction drops them)
    found: list[str] = field(default_factory=list)


def _decodings(raw: bytes) -> Iterator[str]:
    """``raw`` as text, and every token in it decoded from base64, base64url or hex."""
    yield raw.decode("utf-8", errors="replace")
    try:
        unescaped = json.dumps(json.loads(raw), ensure_ascii=False)  # \\u escapes (Persian, Bengali)
    except ValueError:
        unescaped = ""
    yield unescaped
    for token in TOKEN.findall(raw):
        for decode in (base64.b64decode, base64.urlsafe_b64decode, binascii.unhexlify):
            try:
                padded = token + b"=" * (-len(token) % 4) if decode is not binascii.unhexlify else token
                yield decode(padded).decode("utf-8", errors="ignore")
            except (ValueError, binascii.Error):
                continue


async def scan_topics(bootstrap: str, wanted: dict[str, str], master: MasterKeys) -> TopicScan:
    names = topics.all_topics_with_dlq()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(name, p) for name in names for p in sorted(consumer.partitions_for_topic(name) or [])
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = await read_to_end(consumer, partitions, quiet_s=1.0)
    finally:
        await consumer.stop()
    scan = TopicScan(records=len(records), topics=len({tp.topic for tp in partitions}))
    # The keys topic as compaction leaves it: the last record of each key id.
    last: dict[str, Envelope] = {}
    history: dict[str, list[str]] = {}
    for record in records:
        if record.topic != topics.KEYS or not record.value:
            continue
        event = Envelope.model_validate_json(record.value)
        key_id = str(event.data["key_id"])
        history.setdefault(key_id, []).append(event.type)
        if key_id not in last or last[key_id].type != "person_key.destroyed":
            last[key_id] = event
    keys: dict[str, bytes] = {}
    for key_id, event in last.items():
        if event.type == "person_key.created":
            created = PersonKeyCreated.model_validate(event.data)
            keys[key_id] = master.unwrap(created.kek_id, key_id, created.wrapped)
            scan.live_keys += 1
        else:
            scan.destroyed_keys += 1
            scan.superseded += "person_key.created" in history[key_id]
    for record in records:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        texts = [*_decodings(record.value or b""), *_decodings(record.key or b"")]
        texts += [value.decode("utf-8", errors="replace") for _, value in (record.headers or [])]
        try:
            event = Envelope.model_validate_json(record.value or b"")
        except ValueError:
            event = None
        if event is not None and event.sealed is not None:
            scan.sealed += 1
            key = keys.get(event.sealed.key_id)
            if key is None:
                scan.unreadable += 1
            else:
                try:
                    texts.append(json.dumps(open_sealed(event, key).data, ensure_ascii=False))
                    scan.opened += 1
                except InvalidTag:
                    scan.unreadable += 1
        for text in texts:
            lowered = text.lower()
            for what, needle in wanted.items():
                if needle in lowered:
                    scan.found.append(f"{where}: {what}")
    scan.found = sorted(set(scan.found))
    return scan
