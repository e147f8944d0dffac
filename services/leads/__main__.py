"""Run the leads service alone: ``python -m services.leads``."""

from services.leads.app import create_app
from services.leads.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app(settings), settings)
