"""Run the nurture service alone: ``python -m services.nurture``."""

from services.nurture.app import create_app
from services.nurture.settings import Settings
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app(settings), settings)
