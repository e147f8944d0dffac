"""Run the billing service alone: ``python -m services.billing``."""

from services.billing.app import create_app
from services.billing.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app(settings), settings)
