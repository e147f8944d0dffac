"""Serve the console with uvicorn on ``CONSOLE_HOST``:``CONSOLE_PORT``."""

from __future__ import annotations

import uvicorn

from console.app import create_app
from console.settings import Settings


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        # Behind the reverse proxy that terminates TLS (production), its X-Forwarded-* headers.
        proxy_headers=settings.environment != "development",
        server_header=False,
    )
