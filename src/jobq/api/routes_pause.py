"""Pausing and resuming a queue: ``POST /queues/{queue}/pause`` and ``/resume``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from ..access import ADMIN, Access
from .auth import requires
from .problems import problem_responses
from .schemas import NAME_PATTERN
from .state import ApiState, api_state

router = APIRouter(tags=["operations"])
State = Annotated[ApiState, Depends(api_state)]
QueueName = Annotated[str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN)]
# A queue is shared by every tenant whose jobs it holds: pausing it is an administrator's.
Admin = Annotated[Access, Depends(requires(ADMIN))]


class PauseOut(BaseModel):
    queue: str
    paused: bool = Field(description="Whether the queue is paused now")
    changed: bool = Field(description="False when it already was (or was not) paused")


@router.post(
    "/queues/{queue}/pause",
    response_model=PauseOut,
    responses=problem_responses(422, 503),
    summary="Pause a queue: workers claim none of its jobs until it is resumed",
    description="Jobs already running finish; new and waiting jobs stay queued. Idempotent.",
)
async def pause_queue(queue: QueueName, state: State, _: Admin) -> PauseOut:
    changed = await state.jobq.pause_queue(queue)
    return PauseOut(queue=queue, paused=True, changed=changed)


@router.post(
    "/queues/{queue}/resume",
    response_model=PauseOut,
    responses=problem_responses(422, 503),
    summary="Resume a paused queue: workers claim its jobs again",
)
async def resume_queue(queue: QueueName, state: State, _: Admin) -> PauseOut:
    changed = await state.jobq.resume_queue(queue)
    return PauseOut(queue=queue, paused=False, changed=changed)
