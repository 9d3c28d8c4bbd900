"""What a handler sees and may return: `JobContext`, `JobStatus`, `Snooze`; and `TaskRef`,
a typed reference to a task another service runs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class JobContext:
    """The attempt a handler runs. Declare a parameter annotated `JobContext` to receive it."""

    job_id: str
    job_name: str
    attempt: int
    max_attempts: int
    queue: str
    worker_id: str | None
    scheduled_at: datetime | None
    created_at: datetime | None

    @property
    def task_name(self) -> str:
        return self.job_name


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    CANCELLED = "cancelled"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Snooze:
    """Return it from a handler to run the job again `seconds` later without using an
    attempt (at most 30 days). The job's last error becomes `snoozed: <reason>`."""

    seconds: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A task by name, for producers that do not import the handler. `args_model` (a
    pydantic model) validates the args at enqueue; `default_queue` routes them."""

    name: str
    args_model: Any = None
    default_queue: str | None = None

    def with_default_queue(self, queue: str) -> TaskRef:
        return replace(self, default_queue=queue)


def task_ref(name: str, args_model: Any = None, default_queue: str | None = None) -> TaskRef:
    """A `TaskRef`, its name checked against the default task name pattern."""
    from .registry import check_task_name
    from .settings import DEFAULT_TASK_NAME_PATTERN

    check_task_name(name, DEFAULT_TASK_NAME_PATTERN)
    return TaskRef(name, args_model, default_queue)


@dataclass(frozen=True)
class Attempt:
    """One claimed attempt, as the database's claim or the in-memory queue hands it out."""

    job_id: str
    task_name: str
    args: Any
    attempt: int
    max_attempts: int
    queue: str
    timeout: float | None
    scheduled_at: datetime | None
    created_at: datetime | None
    worker_id: str | None
