"""The four services the command line runs, by name."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSpec:
    name: str

    @property
    def prefix(self) -> str:
        return f"{self.name.upper()}_"

    @property
    def migrations(self) -> Path:
        return ROOT / "services" / self.name / "migrations"

    def settings(self) -> ServiceSettings:
        module = importlib.import_module(f"services.{self.name}.settings")
        return module.Settings()


SERVICES = (ServiceSpec("leads"), ServiceSpec("nurture"), ServiceSpec("billing"), ServiceSpec("retention"))
