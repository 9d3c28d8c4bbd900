"""The in-memory queue of `Soniq.in_memory()`: jobs enqueued by the same checks as on
PostgreSQL, run by `soniq.testing.drain` through the same `execute` as the worker, with the
extension's rules for defaults, uniqueness, retries, snoozes and the dead letter. For unit
tests of handlers; nothing is shared between processes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import NOT_FOUND, SoniqError
from .execute import Done, Failed, Handlers, Snoozed, execute
from .job import Attempt
from .registry import DEFAULT_RETRIES, TaskOptions
from .store import EnqueueRequest

DISCARDING = ("permanent_failure", "invalid_arguments", "job_not_found")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


@dataclass
class MemoryJob:
    id: str
    task_name: str
    args: Any
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    scheduled_at: datetime | None
    unique_key: str | None
    dedup_key: str | None
    status: str = "queued"
    attempts: int = 0
    last_error: str | None = None
    result: Any = None
    dead_letter_reason: str | None = None
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)
    moved_at: datetime | None = None  # into the dead letter
    resurrections: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "job_name": self.task_name, "task_name": self.task_name, "args": self.args,
            "status": self.status, "queue": self.queue, "priority": self.priority,
            "attempts": self.attempts, "max_attempts": self.max_attempts,
            "scheduled_at": iso(self.scheduled_at), "last_error": self.last_error, "result": self.result,
            "worker_id": None, "dead_letter_reason": self.dead_letter_reason,
            "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
            "started_at": None, "finished_at": None,
        }  # fmt: skip

    def dead_record(self) -> dict[str, Any]:
        """As a row of soniq.dead_letter_jobs (store.dead_dict): what app.dead_letter lists."""
        return {
            "id": self.id, "job_name": self.task_name, "task_name": self.task_name, "args": self.args,
            "queue": self.queue, "priority": self.priority, "attempts": self.attempts,
            "max_attempts": self.max_attempts, "last_error": self.last_error,
            "dead_letter_reason": self.dead_letter_reason, "producer_id": None,
            "original_created_at": self.created_at, "moved_to_dead_letter_at": self.moved_at,
            "resurrection_count": self.resurrections, "last_resurrection_at": None, "tags": [],
        }  # fmt: skip


class MemoryStore:
    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.jobs: dict[str, MemoryJob] = {}
        self.dead: dict[str, MemoryJob] = {}

    def _options(self, task_name: str) -> TaskOptions:
        task = self.handlers.registry.tasks.get(task_name)
        return task.options if task else TaskOptions()

    def enqueue(self, r: EnqueueRequest) -> str:
        o = self._options(r.task_name)
        unique = r.unique if r.unique is not None else bool(o.unique)
        unique_key = f"{r.task_name}\0{json.dumps(r.args, sort_keys=True)}" if unique else None
        for job in self.jobs.values():
            if job.status == "queued" and (
                (r.dedup_key is not None and job.dedup_key == r.dedup_key)
                or (unique_key is not None and job.unique_key == unique_key)
            ):
                return job.id
        timeout = (
            r.timeout if r.timeout is not None else (o.timeout if o.timeout is not None else 300.0)
        )
        job = MemoryJob(
            id=str(uuid.uuid4()),
            task_name=r.task_name,
            args=json.loads(r.args_json),
            queue=r.queue or o.queue or "default",
            priority=r.priority or o.priority or 100,
            max_attempts=(
                r.retries
                if r.retries is not None
                else (o.retries if o.retries is not None else DEFAULT_RETRIES)
            )
            + 1,
            timeout=timeout or None,
            scheduled_at=r.scheduled_at,
            unique_key=unique_key,
            dedup_key=r.dedup_key,
        )
        self.jobs[job.id] = job
        return job.id

    def _next_due(self) -> MemoryJob | None:
        now = _now()
        due = [
            j
            for j in self.jobs.values()
            if j.status == "queued" and (j.scheduled_at is None or j.scheduled_at <= now)
        ]
        order = list(self.jobs)
        due.sort(
            key=lambda j: (
                j.priority,
                j.scheduled_at is not None,
                j.scheduled_at or now,
                order.index(j.id),
            )
        )
        return due[0] if due else None

    async def drain(self, max_jobs: int | None) -> list[Any]:
        """Run due jobs one at a time until none is due (immediate retries included)."""
        results: list[Any] = []
        ran = 0
        while max_jobs is None or ran < max_jobs:
            job = self._next_due()
            if job is None:
                break
            ran += 1
            job.status, job.attempts = "processing", job.attempts + 1
            attempt = Attempt(
                job.id, job.task_name, job.args, job.attempts, job.max_attempts, job.queue,
                job.timeout, job.scheduled_at, job.created_at, None,
            )  # fmt: skip
            outcome = await execute(self.handlers, attempt, None)
            job.updated_at = _now()
            if isinstance(outcome, Done):
                job.status = "done"
                job.result = (
                    None if outcome.result_json is None else json.loads(outcome.result_json)
                )
                results.append(job.result)
            elif isinstance(outcome, Snoozed):
                job.status, job.attempts = "queued", job.attempts - 1
                job.scheduled_at = _now() + timedelta(seconds=outcome.seconds)
                job.last_error = "snoozed" + (f": {outcome.reason}" if outcome.reason else "")
            elif isinstance(outcome, Failed):
                self._fail(job, outcome)
        return results

    def _fail(self, job: MemoryJob, failure: Failed) -> None:
        job.last_error = failure.error
        if failure.reason in DISCARDING or job.attempts >= job.max_attempts:
            job.dead_letter_reason = failure.reason or "max_retries_exceeded"
            job.status, job.moved_at = "dead_letter", _now()
            self.dead[job.id] = self.jobs.pop(job.id)
            return
        delay = self._options(job.task_name).retry_delay_after(job.attempts)
        job.status = "queued"
        job.scheduled_at = _now() + timedelta(seconds=delay) if delay > 0 else None

    # Reads and management, as on PostgreSQL -------------------------------------------

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id) or self.dead.get(job_id)
        return None if job is None else job.as_dict()

    def list_jobs(
        self, queue: str | None, status: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        jobs = [
            j
            for j in reversed(self.jobs.values())
            if (queue is None or j.queue == queue) and (status is None or j.status == status)
        ]
        return [j.as_dict() for j in jobs[offset : offset + limit]]

    def cancel_job(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status != "queued":
            return False
        job.status = "cancelled"
        return True

    def delete_job(self, job_id: str) -> bool:
        return self.jobs.pop(job_id, None) is not None

    def queue_stats(self, queue: str | None) -> dict[str, int]:
        jobs = [j for j in self.jobs.values() if queue is None or j.queue == queue]
        counts = {
            s: sum(j.status == s for j in jobs)
            for s in ("queued", "processing", "done", "cancelled")
        }
        counts["dead_letter"] = sum(queue is None or j.queue == queue for j in self.dead.values())
        return {"total": sum(counts.values()), **counts}

    def dead_list(self, task_name: str | None, queue: str | None, reason: str | None,
                  moved_after: datetime | None, moved_before: datetime | None,
                  tags: Sequence[str] | None, replayed: bool | None, limit: int,
                  offset: int) -> list[dict[str, Any]]:  # fmt: skip
        """As soniq.dead_letter_list; a dead job in memory has no tags (a tags filter matches none)."""
        dead = [
            j.dead_record() for j in reversed(self.dead.values())
            if (task_name is None or j.task_name == task_name) and (queue is None or j.queue == queue)
            and (reason is None or j.dead_letter_reason == reason)
            and (moved_after is None or (j.moved_at is not None and j.moved_at >= moved_after))
            and (moved_before is None or (j.moved_at is not None and j.moved_at < moved_before))
            and not tags and (replayed is None or (j.resurrections > 0) == replayed)
        ]  # fmt: skip
        return dead[offset : offset + limit]

    def replay(self, dead_job_id: str) -> str:
        dead = self.dead.get(dead_job_id)
        if dead is None:
            raise SoniqError(NOT_FOUND, f"dead job {dead_job_id} does not exist", sqlstate="P0002")
        job = MemoryJob(
            str(uuid.uuid4()), dead.task_name, dead.args, dead.queue, dead.priority, dead.max_attempts,
            dead.timeout, None, None, None,
        )  # fmt: skip
        self.jobs[job.id] = job
        dead.resurrections += 1
        return job.id

    def dead_get(self, dead_job_id: str) -> dict[str, Any] | None:
        dead = self.dead.get(dead_job_id)
        return None if dead is None else dead.dead_record()

    def dead_purge(self, older_than_seconds: float) -> int:
        cutoff = _now() - timedelta(seconds=older_than_seconds)
        old = [i for i, j in self.dead.items() if j.moved_at is None or j.moved_at <= cutoff]
        for dead_job_id in old:
            del self.dead[dead_job_id]
        return len(old)

    def dead_delete(self, dead_job_id: str) -> bool:
        return self.dead.pop(dead_job_id, None) is not None
