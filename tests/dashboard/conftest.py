"""Browser fixtures: Debian's Chromium driven by Playwright (never a downloaded browser),
axe-core for the accessibility scan, and where screenshots go."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import migrated_sqlite
from ..worker.processes import REPO
from .server import serving

CHROMIUM = Path(os.environ.get("JOBQ_TEST_CHROMIUM", "/usr/bin/chromium"))
AXE_VERSION = "4.14.1"
# Where .ci/run (or the first test run) installs axe-core from the npm registry: ignored by git.
AXE_DIR = REPO / ".cache" / "npm"
AXE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "artifacts" / "dashboard"


def _axe() -> Path:
    if not AXE.exists() and shutil.which("npm"):
        subprocess.run(
            [
                "npm",
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(AXE_DIR),
                f"axe-core@{AXE_VERSION}",
            ],
            check=False,
            capture_output=True,
            timeout=300,
        )
    return AXE


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e .[dev]")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def axe_script() -> Path:
    path = _axe()
    if not path.exists():
        pytest.skip(f"axe-core not at {path}: npm install axe-core (.ci/run does)")
    return path


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server that signs people in with API keys (see server.KEYS)."""
    url = migrated_sqlite(tmp_path_factory.mktemp("dash") / "jobq.db")
    with serving(url, keys=True) as base:
        yield base


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()
