"""The vendored libraries are the pinned files, with their licences; the wheel carries them."""

from __future__ import annotations

import hashlib
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[2] / "console" / "static" / "vendor"


def test_vendored_files_match_their_recorded_digests_and_have_licences() -> None:
    lines = (VENDOR / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
        licence = VENDOR / name.replace(".min.js", ".LICENSE.txt").replace(".umd.js", ".LICENSE.txt")
        assert licence.exists() and licence.stat().st_size > 100, licence
    assert "htmx.org@2.0.4" in (VENDOR / "README.md").read_text()


def test_every_template_script_is_served_from_the_console_itself() -> None:
    templates = Path(__file__).resolve().parents[2] / "console" / "templates"
    for template in templates.glob("*.j2"):
        text = template.read_text()
        assert "https://" not in text.replace("https://console", ""), template.name  # nothing from a CDN
        assert "<script>" not in text, f"{template.name}: inline script (the CSP forbids it)"


def test_the_wheel_carries_every_template_and_static_file() -> None:
    """The image installs the wheel (`pip install .`): each data file must match package-data."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any(pattern.startswith("console") for pattern in config["packages"]["find"]["include"])
    patterns = config["package-data"]["console"]
    package = root / "console"
    files = [
        p.relative_to(package).as_posix()
        for folder in ("templates", "static")
        for p in (package / folder).rglob("*")
        if p.is_file()
    ]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert missing == []
