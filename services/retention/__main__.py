"""Run the retention service alone: ``python -m services.retention``."""

from services.retention.app import create_app
from services.retention.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app(settings), settings)
