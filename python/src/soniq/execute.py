"""Running one attempt to its outcome: hooks, middleware, the handler (a coroutine, or a
function in the thread pool) with the job's timeout. Shared by the worker and the
in-memory queue. Texts are cut as the Rust runner cuts them (runner/src/execute.rs)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from .hooks import Hooks, Middleware, chain
from .job import Attempt, JobContext, Snooze
from .registry import Registry

log = logging.getLogger("soniq")

MAX_ERROR_BYTES = 8192
MAX_RESULT_BYTES = 1 << 20
MAX_SNOOZE_SECONDS = 30 * 24 * 3600.0


@dataclass(frozen=True)
class Done:
    result_json: str | None


@dataclass(frozen=True)
class Failed:
    error: str
    reason: str | None = None  # None: retried while attempts remain; else the dead-letter reason


@dataclass(frozen=True)
class Snoozed:
    seconds: float
    reason: str | None


@dataclass(frozen=True)
class Aborted:
    reason: str


Outcome = Done | Failed | Snoozed | Aborted


@dataclass
class Handlers:
    """What an app registered that runs as or around a job."""

    registry: Registry
    hooks: Hooks = field(default_factory=Hooks)
    middlewares: list[Middleware] = field(default_factory=list)


def storable(text: str) -> str:
    """At most MAX_ERROR_BYTES of UTF-8, cut at a character boundary, without NULs (a
    PostgreSQL text cannot hold them)."""
    text = text.replace("\0", "\ufffd")
    data = text.encode("utf-8")
    if len(data) <= MAX_ERROR_BYTES:
        return text
    return data[:MAX_ERROR_BYTES].decode("utf-8", errors="ignore")


def shown_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def error_summary(error: BaseException) -> str:
    """`Type: message`: what the on_error hooks get."""
    return f"{type(error).__name__}: {error}"


def error_text(error: BaseException) -> str:
    """`Type: message`, then the traceback: what is stored."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return storable(f"{error_summary(error)}\n{trace}")


def result_outcome(value: Any, ctx: JobContext) -> Outcome:
    if isinstance(value, Snooze):
        seconds = min(max(float(value.seconds), 0.0), MAX_SNOOZE_SECONDS)
        return Snoozed(seconds, None if value.reason is None else storable(value.reason))
    if value is None:
        return Done(None)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        log.warning(
            "job %s (%s) returned a value that is not JSON; its str() is stored",
            ctx.job_id,
            ctx.job_name,
        )
        text = json.dumps(str(value))
    size = len(text.encode("utf-8"))
    if size > MAX_RESULT_BYTES:
        return Failed(
            f"the result is {size} bytes of JSON, more than the {MAX_RESULT_BYTES} a result may take: "
            "store it elsewhere and return a reference"
        )
    return Done(text)


async def execute(handlers: Handlers, attempt: Attempt, threads: Executor | None) -> Outcome:
    """Run one attempt. The caller's cancellation (shutdown, a cancel request) propagates."""
    task = handlers.registry.tasks.get(attempt.task_name)
    if task is None:
        return Failed(f"task {attempt.task_name} has no handler in this worker", "job_not_found")
    ctx = JobContext(
        job_id=attempt.job_id,
        job_name=attempt.task_name,
        attempt=attempt.attempt,
        max_attempts=attempt.max_attempts,
        queue=attempt.queue,
        worker_id=attempt.worker_id,
        scheduled_at=attempt.scheduled_at,
        created_at=attempt.created_at,
    )
    await handlers.hooks.run("before_job", ctx.job_name, ctx.job_id, ctx.attempt)
    started = time.perf_counter()
    try:
        if not isinstance(attempt.args, Mapping):
            raise TypeError(
                f"the job's args are a JSON {type(attempt.args).__name__}, not an object"
            )
        kwargs = task.call_arguments(attempt.args, ctx)
    except Exception as e:
        return Failed(storable(f"arguments do not match the handler: {e}"), "invalid_arguments")

    async def call() -> Any:
        if task.is_async:
            return await task.function(**kwargs)
        run = functools.partial(contextvars.copy_context().run, task.function, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(threads, run)

    limit = attempt.timeout
    summary: str | None = None  # an exception's, for the hooks (its traceback is stored)
    try:
        async with asyncio.timeout(limit) as deadline:
            value = await chain(handlers.middlewares, ctx, call)
        outcome = result_outcome(value, ctx)
    except TimeoutError as e:
        if limit is not None and deadline.expired():
            outcome = Failed(f"Job timed out after {shown_seconds(limit)}s", "timeout")
        else:
            outcome, summary = Failed(error_text(e)), error_summary(e)
    except Exception as e:
        outcome, summary = Failed(error_text(e)), error_summary(e)
    if isinstance(outcome, Done):
        duration_ms = (time.perf_counter() - started) * 1000.0
        await handlers.hooks.run("after_job", ctx.job_name, ctx.job_id, duration_ms)
    elif isinstance(outcome, Failed):
        error = summary or outcome.error
        await handlers.hooks.run("on_error", ctx.job_name, ctx.job_id, error, ctx.attempt)
    return outcome
