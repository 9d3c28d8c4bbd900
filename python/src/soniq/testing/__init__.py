"""Unit-testing handlers without PostgreSQL: an in-memory app (`Soniq.in_memory()` or
`app.in_memory_twin()`), `drain` to run what was enqueued, and assertions on it.

    app = Soniq.in_memory()
    ...
    await app.enqueue(send_welcome, to="a@b.c")
    assert_enqueued(app, send_welcome, args={"to": "a@b.c"})
    assert await drain(app) == [None]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..app import Soniq
from ..job import TaskRef


async def drain(app: Soniq, max_jobs: int | None = None) -> list[Any]:
    """Run the due jobs of an in-memory app, one at a time, until none is due (immediate
    retries run in the same drain; delayed ones and future jobs stay). Returns the results
    of the jobs that succeeded, in order."""
    return await app._memory_store().drain(max_jobs)  # noqa: SLF001


def _task_name(app: Soniq, target: object) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, TaskRef):
        return target.name
    task = app.registry.of_function(target) if callable(target) else None
    if task is None:
        raise TypeError(f"{target!r} is not a job of this app")
    return task.name


def enqueued(
    app: Soniq, target: object = None, *, status: str | None = None
) -> list[dict[str, Any]]:
    """The jobs of an in-memory app (of one task, in one state), oldest first."""
    name = None if target is None else _task_name(app, target)
    store = app._memory_store()  # noqa: SLF001
    jobs = [j.as_dict() for j in [*store.jobs.values(), *store.dead.values()]]
    return [
        j
        for j in jobs
        if (name is None or j["task_name"] == name) and (status is None or j["status"] == status)
    ]


def assert_enqueued(
    app: Soniq,
    target: object,
    *,
    args: Mapping[str, Any] | None = None,
    count: int | None = None,
    **fields: Any,
) -> list[dict[str, Any]]:
    """Assert that jobs of `target` were enqueued (with these args and fields, e.g.
    `queue="emails"`, `priority=10`, `status="queued"`); returns them."""
    jobs = [
        j for j in enqueued(app, target)
        if (args is None or j["args"] == dict(args)) and all(j.get(k) == v for k, v in fields.items())
    ]  # fmt: skip
    wanted = f"{count} job(s)" if count is not None else "a job"
    described = f"{wanted} of {_task_name(app, target)}" + (
        f" with args {dict(args)}" if args is not None else ""
    )
    described += "".join(f", {k}={v!r}" for k, v in fields.items())
    if (count is None and not jobs) or (count is not None and len(jobs) != count):
        others = [(j["task_name"], j["args"], j["status"]) for j in enqueued(app)]
        raise AssertionError(f"expected {described}; found {len(jobs)}. Enqueued: {others}")
    return jobs


def assert_not_enqueued(
    app: Soniq, target: object, *, args: Mapping[str, Any] | None = None
) -> None:
    jobs = [j for j in enqueued(app, target) if args is None or j["args"] == dict(args)]
    if jobs:
        raise AssertionError(
            f"expected no job of {_task_name(app, target)}; found {[j['args'] for j in jobs]}"
        )


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    poll: float = 0.02,
    message: str | None = None,
) -> None:
    """Wait until `condition()` (sync or async) is true; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout} s")
        await asyncio.sleep(poll)


__all__ = ["assert_enqueued", "assert_not_enqueued", "drain", "enqueued", "wait_until"]
