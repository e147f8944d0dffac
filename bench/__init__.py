"""Clientflow benchmark (``python -m bench``): raw broker and database limits, per-service
backlog consumption on SQLite and PostgreSQL, end-to-end latency at fixed offered loads, CPU
per lead, overload, peak memory, the same with 100x history, and py-spy flame graphs. Writes
bench.json, bench.md, bench.png and flame-*.svg into one directory (copy it to docs/bench)."""
