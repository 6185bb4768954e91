"""The demo kinds: fake work with fixed steps, durations and failure odds.

Each kind is a plan of steps; a step sleeps, then fails with its probability — on the first
attempt only, so the path queued -> running -> retrying -> running -> succeeded is reproducible.
Whether a step fails is a deterministic draw from (job id, attempt, step): the same job fails
at the same step every time, on any machine. Between steps the task checks for cancellation,
so a cancelled demo job stops at the next step boundary.

``time_scale`` multiplies every sleep (0 = no sleeping), so tests run the same plans fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate

from .context import JobContext

if TYPE_CHECKING:
    from ..app import JobQueue


@dataclass(frozen=True, slots=True)
class Step:
    sleep_ms: int
    fail_prob: float


PLANS: dict[str, tuple[Step, ...]] = {
    # A moderate failure rate concentrated at the "send" step.
    "send_email": (Step(50, 0.0), Step(50, 0.45), Step(50, 0.0)),
    # Fetching the source sometimes fails; the resize itself never does.
    "resize_image": (Step(100, 0.25), Step(200, 0.0)),
    # One step, rarely failing.
    "summarize_text": (Step(150, 0.15),),
    # The flakiest dependency: two steps that can fail.
    "webhook_delivery": (Step(80, 0.35), Step(80, 0.15)),
}

DEMO_QUEUE = "default"


def draw(job_id: int, attempt: int, step: int) -> float:
    """A number in [0, 1) fixed by its inputs (not random, not cryptographic: reproducible)."""
    digest = hashlib.blake2b(f"{job_id}:{attempt}:{step}".encode(), digest_size=8).digest()
    (value,) = struct.unpack(">Q", digest)
    return (int(value) >> 11) / float(1 << 53)


class SimulatedFailure(Exception):
    """A demo step failing on purpose."""


async def run_plan(ctx: JobContext, kind: str, time_scale: float) -> dict[str, Any]:
    plan = PLANS[kind]
    for index, step in enumerate(plan):
        ctx.raise_if_cancelled()
        if time_scale > 0:
            await asyncio.sleep(step.sleep_ms / 1000 * time_scale)
        fail_prob = step.fail_prob if ctx.attempt < 2 else 0.0
        if draw(ctx.job.id, ctx.attempt, index) < fail_prob:
            raise SimulatedFailure(
                f"simulated failure at step {index + 1}/{len(plan)} for kind={kind}"
            )
    return {"kind": kind, "steps": len(plan), "attempt": ctx.attempt}


def register_demo_tasks(jobq: JobQueue, *, time_scale: float | None = None) -> None:
    """Register the four demo kinds on ``jobq`` (kinds already registered are left alone)."""
    scale = jobq.settings.simulated_time_scale if time_scale is None else time_scale
    for kind in PLANS:
        if kind not in jobq.tasks:
            task = jobq.task(
                name=kind, queue=DEMO_QUEUE, retry_base=0.5 * scale, retry_cap=30 * scale
            )(_demo_task(kind, scale))
            task.stand_in = True


def _demo_task(
    kind: str, time_scale: float
) -> Callable[Concatenate[JobContext, ...], Awaitable[dict[str, Any]]]:
    async def simulated(ctx: JobContext, **_payload: Any) -> dict[str, Any]:
        return await run_plan(ctx, kind, time_scale)

    simulated.__name__ = kind
    return simulated
