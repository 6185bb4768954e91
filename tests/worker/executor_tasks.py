"""Task functions for the process-executor tests. Top-level functions of an importable
module, as the executor requires: the child process imports them by module:qualname."""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any

from jobq import JobContext

MB = 1024 * 1024


def hang(ctx: JobContext) -> None:
    """Never returns on its own (a deadline far past any test, so nothing is left running)."""
    end = time.monotonic() + 600
    while time.monotonic() < end:
        time.sleep(0.05)


def double(ctx: JobContext, n: int) -> int:
    return n * 2


def whose_pid(ctx: JobContext) -> int:
    return os.getpid()


def hog(ctx: JobContext, mb: int) -> int:
    """Allocates (and touches) ``mb`` megabytes."""
    chunks = [b"x" * MB for _ in range(mb)]
    return len(chunks)


def segfault_first(ctx: JobContext) -> str:
    if ctx.attempt == 1:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return f"survived attempt {ctx.attempt}"


def exit_hard(ctx: JobContext, code: int) -> None:
    os._exit(code)


def report_then_wait_for_cancel(ctx: JobContext) -> None:
    """Reports progress and logs, then stops cooperatively once cancelled."""
    ctx.progress(50, "half way")
    ctx.log.info("half way there", step=1)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        ctx.raise_if_cancelled()
        time.sleep(0.01)


def deaf_to_cancel(ctx: JobContext) -> None:
    ctx.progress(10, "started")
    hang(ctx)


async def async_in_child(ctx: JobContext, n: int) -> dict[str, Any]:
    await ctx.progress(100, "done")
    return {"n": n, "pid": os.getpid()}


def uses_transaction(ctx: JobContext) -> None:
    ctx.transaction()


def fails_with_value_error(ctx: JobContext) -> None:
    raise ValueError("bad input")


def tell_pid_then_hang(ctx: JobContext) -> None:
    ctx.progress(1, str(os.getpid()))
    hang(ctx)
