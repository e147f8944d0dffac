"""The trailing-economics gauges read the store once and split the facts by channel: each
channel's figures must be what ``economics`` reads for that channel alone."""

from __future__ import annotations

import random
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import ConsumerRecord

from bench import workloads
from bench.cluster import migrate
from services.retention import app as retention_app
from services.retention import economics
from services.retention.settings import Settings


async def test_each_channels_share_of_one_read_gives_that_channels_economics(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    await migrate("retention", url)
    settings = Settings(database_url=url, data_dir=tmp_path, migrate_on_start=False)
    runtime = retention_app.create_app(settings).state.runtime
    try:
        messages = workloads.for_retention(400, random.Random(7))  # 100 clients over four channels
        records = [
            ConsumerRecord(m.topic, 0, i, 0, 0, m.key, m.value, None, len(m.key), len(m.value), [])
            for i, m in enumerate(messages)
        ]
        await runtime._consumer.handle(records)
        ctx = types.SimpleNamespace(settings=settings)
        end = datetime.now(UTC) + timedelta(days=1)
        start = end - timedelta(days=400)
        async with runtime.uow() as tx:
            everyone = await economics.read_facts(tx, channel=None)
            channels = sorted({lead.channel for lead in everyone.leads if lead.channel})
            assert len(channels) > 1 and len(everyone.leads) == 100
            counted: dict[str | None, int] = {}
            for channel in [None, *channels]:
                alone = await economics.economics(tx, ctx, start=start, end=end, channel=channel, currency=None)  # type: ignore[arg-type]
                share = everyone if channel is None else everyone.only(channel)
                split = economics.figures_of(share, ctx, economics.Asked(start, end, channel, None))  # type: ignore[arg-type]
                assert split == alone, channel
                counted[channel] = len(share.leads)
            # The split is a split: each channel has some of the clients, together all of them.
            assert all(counted[c] for c in channels) and sum(counted[c] for c in channels) == counted[None]
    finally:
        await runtime.engine.dispose()
