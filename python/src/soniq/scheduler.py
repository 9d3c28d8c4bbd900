"""`app.scheduler`: periodic jobs kept in `soniq.schedules`, fired by the extension's
control plane (no scheduler process to run). Keyed by name (default: the task name);
re-adding a name updates it in place and keeps its next fire time if the timing is unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .enqueue import check_args, resolve_target
from .errors import NOT_SUPPORTED, SoniqError
from .registry import LONGEST_TIMEOUT, check_task_name, seconds, whole_number

if TYPE_CHECKING:
    from .app import Soniq


def every_seconds(every: timedelta | float) -> float:
    """An interval as seconds: a timedelta, or a number of seconds (1 s to 365 days)."""
    if isinstance(every, timedelta):
        value = every.total_seconds()
    elif isinstance(every, (int, float)) and not isinstance(every, bool):
        value = float(every)
    else:
        raise TypeError(
            f"every= must be a timedelta or a number of seconds; got {type(every).__name__}"
        )
    if not 1 <= value <= 365 * 24 * 3600:
        raise ValueError(f"every= must be from 1 second to 365 days, got {value:g} s")
    return value


class Scheduler:
    def __init__(self, app: Soniq) -> None:
        self._app = app

    async def _store(self) -> Any:
        if self._app.is_memory:
            raise SoniqError(
                NOT_SUPPORTED, "schedules live in PostgreSQL: an in-memory app has none"
            )
        await self._app.ensure_initialized()
        return self._app.backend

    async def add(
        self,
        target: object = None,
        *,
        cron: object = None,
        every: timedelta | float | None = None,
        args: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        retries: int | None = None,
        timeout: float | timedelta | None = None,
        time_zone: str = "UTC",
        name: str | None = None,
        enabled: bool = True,
    ) -> str:
        """Create or update a schedule; returns its name. `target`: a job function, a task
        name or a TaskRef (or only `name=`, which is then the task name too)."""
        spec = self.spec(
            target, cron, every, args, queue, priority, retries, timeout, time_zone, name, enabled
        )
        await (await self._store()).schedule_add(*spec)
        return str(spec[0])

    def spec(
        self, target: object, cron: object, every: timedelta | float | None, args: Mapping[str, Any] | None,
        queue: str | None, priority: int | None, retries: int | None, timeout: float | timedelta | None,
        time_zone: str, name: str | None, enabled: bool,
    ) -> tuple[Any, ...]:  # fmt: skip
        """The checked arguments of `soniq.schedule_add`, in its order."""
        if (cron is None) == (every is None):
            raise ValueError("a schedule takes exactly one of cron= and every=")
        if target is None:
            if name is None:
                raise TypeError(
                    "scheduler.add() needs a target (a job, a task name or a TaskRef) or name="
                )
            target = name
        task_name, job_args, task, ref = resolve_target(
            self._app.registry, target, args, {}, "scheduler.add"
        )
        check_task_name(task_name, self._app.settings.task_name_pattern)
        args_json = check_args(task_name, job_args, task, ref)
        return (
            name or task_name,
            task_name,
            None if cron is None else str(cron),
            None if every is None else every_seconds(every),
            args_json,
            time_zone,
            queue or (task.options.queue if task else None),
            None if priority is None else whole_number("priority", priority, 1, 1000),
            None if retries is None else whole_number("retries", retries, 0, 1000),
            None if timeout is None else seconds("timeout", timeout, LONGEST_TIMEOUT),
            enabled,
        )

    async def pause(self, name: str) -> bool:
        """Stop firing; False if it was paused already (unknown: SoniqError)."""
        return bool(await (await self._store()).schedule_pause(name))

    async def resume(self, name: str) -> bool:
        return bool(await (await self._store()).schedule_resume(name))

    async def remove(self, name: str) -> bool:
        """Delete a schedule (jobs it made stay); False if there was none."""
        store = await self._store()
        try:
            await store.schedule_remove(name)
            return True
        except SoniqError as e:
            if e.sqlstate == "P0002":
                return False
            raise

    async def get(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await (await self._store()).schedule_get(name)
        return result

    async def list(self, status: str | None = None) -> list[dict[str, Any]]:
        """All schedules by name, or only `active` or `paused` ones."""
        if status not in (None, "active", "paused"):
            raise ValueError(f"status must be 'active' or 'paused', got {status!r}")
        enabled = None if status is None else status == "active"
        result: list[dict[str, Any]] = await (await self._store()).schedule_list(enabled)
        return result
