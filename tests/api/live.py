"""Real `jobq api` processes for tests that need the whole stack (uvicorn, ports, processes)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from ..worker.processes import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def live_api(db_url: str, **settings: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start `jobq api` on a free port; yield (base URL, process); SIGTERM it afterwards and
    check it exits cleanly."""
    port = free_port()
    env = {
        **os.environ,
        "JOBQ_DATABASE_URL": db_url,
        "JOBQ_API_PORT": str(port),
        "JOBQ_LOG_LEVEL": "WARNING",
        **settings,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "jobq.cli", "api"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # a condition with a deadline: the server answers /health
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"jobq api did not come up: {stderr[-2000:]}")
            time.sleep(0.05)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, f"jobq api exited with {code}"
