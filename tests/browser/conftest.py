"""Fixtures of the browser tests: the example served by runserver, and chromium.

The example project runs as a user runs it (``manage.py runserver``) in a
child process, on 127.0.0.1 and a free port, on a SQLite file of its own.
Playwright drives Debian's chromium (``DJTHREADS_CHROMIUM``, default
/usr/bin/chromium) headless; it never downloads a browser. ``.ci/browser.sh``
(``make browser``) installs both and runs these tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

REPO = Path(__file__).resolve().parents[2]
MANAGE = REPO / "example" / "manage.py"
# Where the tests save their screenshots (build/ is ignored by git);
# `make screenshot` copies one into the docs.
SCREENSHOTS = REPO / "build" / "browser"
READY = "Quit the server with"
# A job's status page refreshes once a second; a job here takes seconds.
expect.set_options(timeout=30_000)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Server:
    """One ``manage.py runserver`` child process and what it printed."""

    url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        # Runs in a daemon thread for the life of the server: drains its
        # output (so a full pipe never blocks it) and notices the banner.
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if READY in line:
                self.ready.set()
        self.ready.set()  # it exited: let the waiting fixture see why

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def example_env(database: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example.project.settings",
        "EXAMPLE_SQLITE": str(database),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("DATABASE_URL", None)  # always the test's own SQLite file
    return env


def start_server(database: Path, **extra: str) -> Server:
    """Start runserver on a free port and wait for its banner (30 s at most)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=example_env(database, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(url=f"http://127.0.0.1:{port}", process=process)
    threading.Thread(target=server.read, name="runserver-output", daemon=True).start()
    if not server.ready.wait(timeout=30) or process.poll() is not None:
        server.stop()
        raise RuntimeError(f"runserver did not start on port {port}:\n{''.join(server.output)}")
    return server


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's SQLite file for this test session, migrated."""
    path = tmp_path_factory.mktemp("example") / "example.sqlite3"
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "-v0"],
        env=example_env(path),
        check=True,
        timeout=120,
    )
    return path


@pytest.fixture(scope="session")
def server(database: Path) -> Iterator[Server]:
    """The example on its own built-in data source, slowed to 0.1 s a record."""
    running = start_server(database, HARVEST_LATENCY="0.1")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def refused_source() -> str:
    """The URL of a data source that is down: nothing listens on its port."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def failing_server(database: Path, refused_source: str) -> Iterator[Server]:
    """The example with HARVEST_SOURCE_URL pointing at a source that is down."""
    running = start_server(database, HARVEST_SOURCE_URL=refused_source)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, driven by Playwright."""
    executable = os.environ.get("DJTHREADS_CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        raise RuntimeError(
            f"No chromium at {executable}: run `make browser`, which installs Debian's "
            "chromium, or set DJTHREADS_CHROMIUM to a Chromium binary."
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab, 900 px wide, at twice the pixel density (sharp screenshots)."""
    context = browser.new_context(viewport={"width": 900, "height": 700}, device_scale_factor=2)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
