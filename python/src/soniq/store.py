"""The one seam to the database: every statement Soniq for Python sends, each a call of a
`soniq.*` function of the extension (sql/api.sql, sql/control_plane.sql). Nothing here
writes a table. Internal: not a stable API.

Conventions: JSON travels as text (`::text::jsonb` in, `::text` out) and times as Unix
seconds, so the statements need no driver codecs and run the same on the caller's asyncpg
or psycopg connection; each parameter appears once, in order (psycopg's `%s` rewriting)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .connections import AsyncpgExecutor, Executor
from .errors import DATABASE_REFUSED, SoniqError
from .job import Attempt

ENQUEUE = (
    "SELECT soniq.enqueue($1::text, $2::text::jsonb, queue => $3::text, priority => $4::int, "
    "scheduled_at => to_timestamp($5::float8), retries => $6::int, unique_job => $7::boolean, "
    "dedup_key => $8::text, timeout => make_interval(secs => $9::float8), producer_id => $10::text)::text"
)
ENQUEUE_MANY = "SELECT id::text FROM soniq.enqueue_many($1::text::jsonb) AS id"
JOB_COLUMNS = (
    "id::text, task_name, args::text, status, queue, priority, attempts, max_attempts, scheduled_at, "
    "last_error, result::text, worker_id::text, dead_letter_reason, created_at, updated_at, "
    "started_at, finished_at"
)
SCHEDULE_COLUMNS = (
    "name, task_name, args::text, cron, extract(epoch FROM every)::float8, time_zone, queue, priority, "
    "retries, extract(epoch FROM timeout)::float8, enabled, next_fire_at, last_fire_at, "
    "last_job_id::text, fire_count, last_error, created_at, updated_at"
)
DEAD_COLUMNS = (
    "id::text, task_name, args::text, queue, priority, attempts, max_attempts, last_error, "
    "dead_letter_reason, producer_id, original_created_at, moved_to_dead_letter_at, "
    "resurrection_count, last_resurrection_at, tags"
)
# SQLSTATE classes of a refusal (bad input, a constraint, a permission, a limit, an unknown
# object, a lease no longer current): raised as SoniqError. Anything else (an outage) as is.
REFUSAL_CLASSES = ("22", "23", "42", "54", "P0", "55")


# The server's answers that it is not available: shutting down, crashed, starting up.
SERVER_UNAVAILABLE = ("57P01", "57P02", "57P03")


def unreachable(e: BaseException) -> bool:
    """Whether the database could not be reached (no server answer: the socket, a timeout,
    a connection closed; class 08; or SERVER_UNAVAILABLE) rather than that it refused the
    request. The Rust runner's Error::unreachable draws the same line."""
    sqlstate = getattr(e, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith("08") or sqlstate in SERVER_UNAVAILABLE
    return isinstance(e, (OSError, TimeoutError, asyncpg.InterfaceError))


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """The database's refusals as SoniqError, its message and SQLSTATE kept."""
    try:
        yield
    except Exception as e:
        sqlstate = getattr(e, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in REFUSAL_CLASSES:
            message = getattr(e, "message", None) or str(e)
            raise SoniqError(DATABASE_REFUSED, message, sqlstate=sqlstate) from e
        raise


def job_uuid(value: object, what: str = "job id") -> str:
    """A job id as text, or ValueError naming what it is."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{what} must be a UUID, got {value!r}") from None


def unix_seconds(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class EnqueueRequest:
    """One job to enqueue, checked: unset options are None (the task's, then the system's
    defaults apply in the database)."""

    task_name: str
    args: Mapping[str, Any]
    args_json: str
    queue: str | None = None
    priority: int | None = None
    scheduled_at: datetime | None = None
    retries: int | None = None
    unique: bool | None = None
    dedup_key: str | None = None
    timeout: float | None = None

    def spec(self, producer_id: str) -> dict[str, Any]:
        """The job spec `soniq.enqueue_many` takes."""
        spec: dict[str, Any] = {
            "task_name": self.task_name,
            "args": self.args,
            "queue": self.queue,
            "priority": self.priority,
            "scheduled_at": None if self.scheduled_at is None else self.scheduled_at.isoformat(),
            "retries": self.retries,
            "unique": self.unique,
            "dedup_key": self.dedup_key,
            "timeout": self.timeout,
            "producer_id": producer_id,
        }
        return {k: v for k, v in spec.items() if v is not None}


class PostgresStore:
    """Soniq's pool and the statements it sends on it (or on a caller's connection)."""

    def __init__(self, pool: Any, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn  # the worker's listener connects to the same database

    @classmethod
    async def connect(cls, dsn: str, min_size: int, max_size: int) -> PostgresStore:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        return cls(pool, dsn)

    def acquire(self) -> Any:
        """A connection from Soniq's pool (`async with store.acquire() as conn`)."""
        return self.pool.acquire()

    async def close(self) -> None:
        await self.pool.close()

    def abandon(self) -> None:
        """Drop a pool of another event loop (which may be closed: then its connections go
        with it)."""
        with contextlib.suppress(RuntimeError):
            self.pool.terminate()

    @contextlib.asynccontextmanager
    async def _executor(self) -> AsyncIterator[Executor]:
        async with self.pool.acquire() as connection:
            yield AsyncpgExecutor(connection)

    async def _rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        with refusals():
            async with self._executor() as executor:
                return await executor.rows(sql, *args)

    async def _value(self, sql: str, *args: Any) -> Any:
        rows = await self._rows(sql, *args)
        return rows[0][0] if rows else None

    # Enqueue ---------------------------------------------------------------------------

    @staticmethod
    async def enqueue_on(executor: Executor, request: EnqueueRequest, producer_id: str) -> str:
        with refusals():
            rows = await executor.rows(
                ENQUEUE,
                request.task_name,
                request.args_json,
                request.queue,
                request.priority,
                unix_seconds(request.scheduled_at),
                request.retries,
                request.unique,
                request.dedup_key,
                request.timeout,
                producer_id,
            )
        return str(rows[0][0])

    async def enqueue(self, request: EnqueueRequest, producer_id: str) -> str:
        async with self._executor() as executor:
            return await self.enqueue_on(executor, request, producer_id)

    @staticmethod
    async def enqueue_many_on(
        executor: Executor, requests: Sequence[EnqueueRequest], producer_id: str
    ) -> list[str]:
        specs = json.dumps([r.spec(producer_id) for r in requests])
        with refusals():
            rows = await executor.rows(ENQUEUE_MANY, specs)
        return [str(r[0]) for r in rows]

    async def enqueue_many(self, requests: Sequence[EnqueueRequest], producer_id: str) -> list[str]:
        async with self._executor() as executor:
            return await self.enqueue_many_on(executor, requests, producer_id)

    async def register_task(self, task_name: str, defaults: Mapping[str, Any]) -> None:
        await self._rows(
            "SELECT soniq.register_task($1::text, $2::text::jsonb)", task_name, json.dumps(defaults)
        )

    # Workers, claims and outcomes --------------------------------------------------------

    async def register_worker(
        self, hostname: str, pid: int, queues: Sequence[str] | None, concurrency: int,
        version: str, task_names: Sequence[str],
    ) -> str:  # fmt: skip
        value = await self._value(
            "SELECT soniq.register_worker($1::text, $2::int, $3::text[], $4::int, $5::text, "
            "task_names => $6::text[])::text",
            hostname, pid, None if queues is None else list(queues), concurrency, version, list(task_names),
        )  # fmt: skip
        return str(value)

    async def claim(
        self, worker_id: str, queues: Sequence[str] | None, count: int, task_names: Sequence[str]
    ) -> list[Attempt]:
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT id::text, task_name, args::text, attempt, max_attempts, queue, "
                "extract(epoch FROM timeout)::float8, scheduled_at, created_at "
                "FROM soniq.claim($1::uuid, $2::text[], $3::int, $4::text[])",
                worker_id, None if queues is None else list(queues), count, list(task_names),
            )  # fmt: skip
        # A timeout of 0 is none.
        return [
            Attempt(
                r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6] or None, r[7], r[8], worker_id
            )
            for r in rows
        ]

    async def held_back(self, queues: Sequence[str] | None, task_names: Sequence[str]) -> bool:
        """Whether a queue with flow control (of `queues`; None: any) has runnable jobs of these
        tasks: after a claim that found nothing, jobs its limits hold back."""
        value = await self._value(
            "SELECT soniq.held_back($1::text[], $2::text[])",
            None if queues is None else list(queues), list(task_names),
        )  # fmt: skip
        return bool(value)

    async def complete_many(
        self,
        worker_id: str,
        job_ids: Sequence[str],
        attempts: Sequence[int],
        results: Sequence[str | None],
    ) -> set[str]:
        rows = await self._rows(
            "SELECT x::text FROM soniq.complete_many($1::uuid[], $2::uuid, $3::int[], $4::text[]::jsonb[]) x",
            list(job_ids), worker_id, list(attempts), list(results),
        )  # fmt: skip
        return {r[0] for r in rows}

    async def fail_many(
        self, worker_id: str, job_ids: Sequence[str], attempts: Sequence[int],
        errors: Sequence[str], reasons: Sequence[str | None],
    ) -> set[str]:  # fmt: skip
        rows = await self._rows(
            "SELECT f.job_id::text FROM soniq.fail_many($1::uuid[], $2::uuid, $3::int[], $4::text[], "
            "NULL, $5::text[]) f",
            list(job_ids), worker_id, list(attempts), list(errors), list(reasons),
        )  # fmt: skip
        return {r[0] for r in rows}

    async def snooze(
        self, worker_id: str, job_id: str, attempt: int, seconds: float, reason: str | None
    ) -> None:
        await self._rows(
            "SELECT soniq.snooze($1::uuid, $2::uuid, $3::int, make_interval(secs => $4::float8), $5::text)",
            job_id, worker_id, attempt, seconds, reason,
        )  # fmt: skip

    async def abort(self, worker_id: str, job_id: str, attempt: int, reason: str) -> None:
        await self._rows(
            "SELECT soniq.abort($1::uuid, $2::uuid, $3::int, $4::text)",
            job_id,
            worker_id,
            attempt,
            reason,
        )

    async def heartbeat(self, worker_id: str, held: Sequence[str]) -> list[str]:
        """The held jobs whose cancellation was requested."""
        rows = await self._rows(
            "SELECT x::text FROM soniq.heartbeat($1::uuid, $2::uuid[]) x", worker_id, list(held)
        )
        return [r[0] for r in rows]

    async def deregister_worker(self, worker_id: str) -> int:
        return int(await self._value("SELECT soniq.deregister_worker($1::uuid)", worker_id))

    async def maintain(
        self, heartbeat_timeout: float, prune_batch: int = 1000, batches: int = 10
    ) -> None:
        """A worker's maintenance round: the control plane's rescue and pruning (harmless
        when it runs too), one prune batch a transaction."""
        await self._rows(
            "SELECT soniq.rescue_jobs(make_interval(secs => $1::float8))", heartbeat_timeout
        )
        for _ in range(batches):
            pruned = await self._value(
                "SELECT soniq.prune_jobs(batch_size => $1::int, max_batches => 1)", prune_batch
            )
            if pruned < prune_batch:
                break

    # Jobs ------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        rows = await self._rows(f"SELECT {JOB_COLUMNS} FROM soniq.get_job($1::uuid)", job_id)
        return job_dict(rows[0]) if rows else None

    async def list_jobs(
        self, queue: str | None, status: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        rows = await self._rows(
            f"SELECT {JOB_COLUMNS} FROM soniq.list_jobs($1::text, $2::text, $3::int, $4::int)",
            queue, status, limit, offset,
        )  # fmt: skip
        return [job_dict(r) for r in rows]

    async def cancel_job(self, job_id: str) -> bool:
        return bool(await self._value("SELECT soniq.cancel_job($1::uuid)", job_id))

    async def delete_job(self, job_id: str) -> None:
        await self._rows("SELECT soniq.delete_job($1::uuid)", job_id)

    async def queue_stats(self, queue: str | None) -> dict[str, int]:
        rows = await self._rows(
            "SELECT total, queued, processing, done, cancelled, dead_letter FROM soniq.queue_stats($1::text)",
            queue,
        )
        keys = ("total", "queued", "processing", "done", "cancelled", "dead_letter")
        return {k: int(v) for k, v in zip(keys, rows[0], strict=True)}

    # Schedules -------------------------------------------------------------------------

    async def schedule_add(self, name: str, task_name: str, cron: str | None, every: float | None,
                           args_json: str, time_zone: str, queue: str | None, priority: int | None,
                           retries: int | None, timeout: float | None, enabled: bool) -> dict[str, Any]:  # fmt: skip
        rows = await self._rows(
            f"SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_add($1::text, $2::text, $3::text, "
            "make_interval(secs => $4::float8), $5::text::jsonb, $6::text, $7::text, $8::int, $9::int, "
            "make_interval(secs => $10::float8), $11::boolean)",
            name, task_name, cron, every, args_json, time_zone, queue, priority, retries, timeout, enabled,
        )  # fmt: skip
        return schedule_dict(rows[0])

    async def schedule_pause(self, name: str) -> bool:
        return bool(await self._value("SELECT soniq.schedule_pause($1::text)", name))

    async def schedule_resume(self, name: str) -> bool:
        return bool(await self._value("SELECT soniq.schedule_resume($1::text)", name))

    async def schedule_remove(self, name: str) -> None:
        await self._rows("SELECT soniq.schedule_remove($1::text)", name)

    async def schedule_get(self, name: str) -> dict[str, Any] | None:
        rows = await self._rows(
            f"SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_get($1::text)", name
        )
        return schedule_dict(rows[0]) if rows else None

    async def schedule_list(self, enabled: bool | None) -> list[dict[str, Any]]:
        rows = await self._rows(
            f"SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_list($1::boolean)", enabled
        )
        return [schedule_dict(r) for r in rows]

    # Dead letter -----------------------------------------------------------------------

    async def dead_letter_list(self, task_name: str | None, queue: str | None, reason: str | None,
                               moved_after: datetime | None, moved_before: datetime | None,
                               tags: Sequence[str] | None, replayed: bool | None, limit: int,
                               offset: int) -> list[dict[str, Any]]:  # fmt: skip
        rows = await self._rows(
            f"SELECT {DEAD_COLUMNS} FROM soniq.dead_letter_list($1::text, $2::text, $3::text, "
            "to_timestamp($4::float8), to_timestamp($5::float8), $6::text[], $7::boolean, $8::int, $9::int)",
            task_name, queue, reason, unix_seconds(moved_after), unix_seconds(moved_before),
            None if tags is None else list(tags), replayed, limit, offset,
        )  # fmt: skip
        return [dead_dict(r) for r in rows]

    async def dead_letter_get(self, dead_job_id: str) -> dict[str, Any] | None:
        rows = await self._rows(
            f"SELECT {DEAD_COLUMNS} FROM soniq.dead_letter_get($1::uuid)", dead_job_id
        )
        return dead_dict(rows[0]) if rows else None

    async def replay(self, dead_job_id: str, queue: str | None, priority: int | None,
                     max_attempts: int | None, reset_attempts: bool) -> str:  # fmt: skip
        value = await self._value(
            "SELECT soniq.replay($1::uuid, $2::text, $3::int, $4::int, $5::boolean)::text",
            dead_job_id, queue, priority, max_attempts, reset_attempts,
        )  # fmt: skip
        return str(value)

    async def dead_letter_delete(self, dead_job_id: str) -> None:
        await self._rows("SELECT soniq.dead_letter_delete($1::uuid)", dead_job_id)

    async def dead_letter_purge(self, older_than_seconds: float) -> int:
        return int(
            await self._value(
                "SELECT soniq.dead_letter_purge(make_interval(secs => $1::float8))",
                older_than_seconds,
            )
        )

    async def dead_letter_stats(self, since_seconds: float | None) -> dict[str, Any]:
        text = await self._value(
            "SELECT soniq.dead_letter_stats(make_interval(secs => $1::float8))::text", since_seconds
        )
        result: dict[str, Any] = json.loads(text)
        return result

    async def dead_letter_tag(self, dead_job_id: str, tags: Sequence[str]) -> list[str]:
        return list(
            await self._value(
                "SELECT soniq.dead_letter_tag($1::uuid, $2::text[])", dead_job_id, list(tags)
            )
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def job_dict(r: Sequence[Any]) -> dict[str, Any]:
    """A job as `get_job` returns it: the reference's keys (times as ISO text), with
    `task_name` beside `job_name`, and status `dead_letter` for a dead job."""
    status = "dead_letter" if r[3] == "dead" else r[3]
    return {
        "id": r[0], "job_name": r[1], "task_name": r[1], "args": json.loads(r[2]), "status": status,
        "queue": r[4], "priority": r[5], "attempts": r[6], "max_attempts": r[7],
        "scheduled_at": _iso(r[8]), "last_error": r[9], "result": json_or_none(r[10]),
        "worker_id": r[11], "dead_letter_reason": r[12], "created_at": _iso(r[13]),
        "updated_at": _iso(r[14]), "started_at": _iso(r[15]), "finished_at": _iso(r[16]),
    }  # fmt: skip


def schedule_dict(r: Sequence[Any]) -> dict[str, Any]:
    return {
        "name": r[0], "task_name": r[1], "args": json.loads(r[2]),
        "schedule_type": "cron" if r[3] is not None else "interval",
        "schedule_value": r[3] if r[3] is not None else r[4], "cron": r[3], "every": r[4],
        "time_zone": r[5], "queue": r[6], "priority": r[7], "retries": r[8], "timeout": r[9],
        "status": "active" if r[10] else "paused", "enabled": r[10], "next_run": r[11],
        "last_run": r[12], "last_job_id": r[13], "run_count": r[14], "last_error": r[15],
        "created_at": r[16], "updated_at": r[17],
    }  # fmt: skip


def dead_dict(r: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": r[0], "job_name": r[1], "task_name": r[1], "args": json.loads(r[2]), "queue": r[3],
        "priority": r[4], "attempts": r[5], "max_attempts": r[6], "last_error": r[7],
        "dead_letter_reason": r[8], "producer_id": r[9], "original_created_at": r[10],
        "moved_to_dead_letter_at": r[11], "resurrection_count": r[12],
        "last_resurrection_at": r[13], "tags": list(r[14]),
    }  # fmt: skip
