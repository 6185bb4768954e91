"""The executor benchmark's task functions: top level of an importable module, as the
process executor requires (its children import them by module:qualname)."""

from __future__ import annotations

from ..worker.context import JobContext

CPU_STEPS = 1_000_000  # pure-Python loop steps per CPU-bound job (~50-100 ms on one core)


def burn(steps: int) -> int:
    """A fixed amount of pure-Python work: holds the GIL throughout."""
    total = 0
    for i in range(steps):
        total = (total + i * i) % 1_000_003
    return total


def cpu_sync(ctx: JobContext, steps: int) -> int:
    return burn(steps)


async def cpu_async(ctx: JobContext, steps: int) -> int:
    return burn(steps)


def noop_sync(ctx: JobContext) -> None:
    return None


async def noop_async(ctx: JobContext) -> None:
    return None
