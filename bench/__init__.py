"""Clientflow benchmark (``python -m bench``): raw broker and database limits, per-service
backlog consumption, end-to-end latency at fixed offered loads, peak memory, and the same
figures with ten times the history. Writes bench.json, bench.md and bench.png."""
