"""Real processes for the end-to-end observability tests: `jobq serve`, an OTLP/HTTP receiver
and Prometheus, each on a free loopback port, each stopped (killed if need be) afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from jobq.bench.stopping import stop_processes

from ..api.live import free_port
from ..worker.processes import REPO

HERE = Path(__file__).resolve().parent


def wait_for(probe: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    (code,) = stop_processes([process], grace)
    return code


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def jobq_serve(db_url: str, log: Path, **env: str) -> Iterator[str]:
    """`jobq serve` (API + worker, the demo kinds); yields its base URL. Stopped with
    SIGTERM, which must end it cleanly (that is also when it flushes its spans)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobq.cli", "serve"],
        cwd=REPO,
        env={
            **os.environ,
            "JOBQ_DATABASE_URL": db_url,
            "JOBQ_API_HOST": "127.0.0.1",
            "JOBQ_API_PORT": str(port),
            "JOBQ_LOG_LEVEL": "WARNING",
            "JOBQ_SIMULATED_TIME_SCALE": "0",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/health") or process.poll() is not None, "jobq serve")
        assert process.poll() is None, f"jobq serve died: {log.read_text()[-2000:]}"
        yield base
    finally:
        code = _stop(process)
    assert code == 0, f"jobq serve exited with {code}: {log.read_text()[-2000:]}"


@contextmanager
def otlp_receiver(out: Path) -> Iterator[str]:
    """The receiver of otlp_receiver.py; yields its endpoint (for OTEL_EXPORTER_OTLP_ENDPOINT)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "otlp_receiver.py"), str(port), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/ready") or process.poll() is not None, "receiver")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        yield base
    finally:
        _stop(process, grace=10)


@contextmanager
def prometheus(config: str, workdir: Path) -> Iterator[str]:
    """Debian's Prometheus with ``config``, its storage in ``workdir``; yields its URL."""
    port = free_port()
    config_file = workdir / "prometheus.yml"
    config_file.write_text(config)
    log = workdir / "prometheus.log"
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/-/ready") or process.poll() is not None, "prometheus")
        assert process.poll() is None, f"prometheus died: {log.read_text()[-2000:]}"
        yield base
    finally:
        _stop(process, grace=20)
