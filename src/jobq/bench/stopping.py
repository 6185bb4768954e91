"""Stopping processes a benchmark (or a test) started: as an orchestrator does."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from typing import Any


def stop_processes(processes: Sequence[subprocess.Popen[Any]], timeout_s: float) -> list[int]:
    """SIGTERM each one still running, then their exit codes; one that overstays
    ``timeout_s`` is killed (its code then says so)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes
