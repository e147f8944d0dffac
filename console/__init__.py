"""The web console: server-rendered pages over the four services' public HTTP APIs, used with
each person's own token. It owns no business data (sessions only)."""
