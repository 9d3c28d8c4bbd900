"""Turning an `enqueue` call into a checked `EnqueueRequest`: the three target shapes
(a registered function, a task name, a `TaskRef`), the arguments (JSON, the handler's
signature or model) and the per-call options. Every misuse raises before anything is sent."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import INVALID_OPTION, TASK_ARGS_INVALID, UNKNOWN_TASK_NAME, SoniqError
from .job import TaskRef
from .registry import (
    LONGEST_TIMEOUT,
    Registry,
    Task,
    boolean,
    check_task_name,
    seconds,
    whole_number,
)
from .settings import SoniqSettings
from .store import EnqueueRequest

log = logging.getLogger("soniq")


@dataclass(frozen=True)
class CallOptions:
    """The per-call options of `enqueue` (None: not given)."""

    queue: str | None = None
    priority: int | None = None
    scheduled_at: datetime | timedelta | float | None = None
    unique: bool | None = None
    dedup_key: str | None = None
    retries: int | None = None
    timeout: float | timedelta | None = None


def resolve_target(
    registry: Registry,
    target: object,
    args: object,
    func_kwargs: Mapping[str, Any],
    caller: str = "enqueue",
) -> tuple[str, Mapping[str, Any], Task | None, TaskRef | None]:
    """(task name, args, local registration, TaskRef) of a call; the shape rules enforced."""
    if args is not None and not isinstance(args, Mapping):
        raise TypeError(f"{caller}() args must be a dict, got {type(args).__name__}")
    if isinstance(target, TaskRef):
        if func_kwargs:
            raise TypeError(
                f"{caller}(TaskRef, ...) takes the job's arguments as args=dict, not as keywords "
                f"(got {', '.join(sorted(func_kwargs))})"
            )
        return target.name, args or {}, registry.tasks.get(target.name), target
    if isinstance(target, str):
        if func_kwargs:
            raise TypeError(
                f"{caller}('{target}', ...) takes the job's arguments as args=dict: keywords would "
                f"collide with options like queue= and priority= (got {', '.join(sorted(func_kwargs))})"
            )
        return target, args or {}, registry.tasks.get(target), None
    if callable(target):
        task = registry.of_function(target)
        if task is None:
            raise SoniqError(
                UNKNOWN_TASK_NAME,
                f"{getattr(target, '__qualname__', target)!r} is not a job of this app: decorate it "
                "with @app.job() (of this Soniq instance), or enqueue by task name",
            )
        if args is not None:
            if func_kwargs:
                raise TypeError(
                    f"{caller}(function, ...) cannot mix args=dict with keyword arguments; use one or the other"
                )
            return task.name, args, task, None
        return task.name, func_kwargs, task, None
    raise TypeError(
        f"{caller}() target must be a job function, a task name or a TaskRef; got {type(target).__name__}"
    )


def check_args(
    task_name: str, args: Mapping[str, Any], task: Task | None, ref: TaskRef | None
) -> str:
    """The args as JSON text, after the handler's signature (or model) accepted them."""
    bad_keys = [k for k in args if not isinstance(k, str)]
    if bad_keys:
        raise SoniqError(
            TASK_ARGS_INVALID,
            f"Arguments for task {task_name!r} must have string keys, got {bad_keys[0]!r}",
        )
    try:
        text = json.dumps(args, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise SoniqError(
            TASK_ARGS_INVALID, f"Arguments for task {task_name!r} must be JSON-serializable: {e}"
        ) from None
    problem = None
    if task is not None:
        problem = task.argument_problem(args)
    elif ref is not None and ref.args_model is not None:
        try:
            ref.args_model.model_validate(dict(args))
        except Exception as e:
            problem = str(e)
    if problem is not None:
        raise SoniqError(TASK_ARGS_INVALID, f"Invalid arguments for task {task_name!r}: {problem}")
    return text


def run_at(
    value: datetime | timedelta | float | None, now: Callable[[], datetime]
) -> datetime | None:
    """scheduled_at as an aware UTC time: a time, a delay, or seconds from now."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                "scheduled_at must be timezone-aware: pass datetime.now(timezone.utc) + ..., "
                f"or attach a tzinfo (got the naive {value.isoformat()})"
            )
        return value.astimezone(timezone.utc)
    if isinstance(value, timedelta):
        return now() + value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return now() + timedelta(seconds=value)
    raise TypeError(
        f"scheduled_at must be a datetime, a timedelta or seconds from now, got {value!r}"
    )


class RequestBuilder:
    """Builds requests for one app; remembers the unknown names it warned about."""

    def __init__(self, settings: SoniqSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._warned: set[str] = set()

    def build(
        self,
        target: object,
        args: object,
        func_kwargs: Mapping[str, Any],
        options: CallOptions,
        caller: str = "enqueue",
    ) -> EnqueueRequest:
        name, job_args, task, ref = resolve_target(self.registry, target, args, func_kwargs, caller)
        check_task_name(name, self.settings.task_name_pattern)
        if task is None and ref is None:
            self._unknown(name)
        args_json = check_args(name, job_args, task, ref)
        queue = options.queue
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise SoniqError(INVALID_OPTION, f"queue must be a non-empty string, got {queue!r}")
        # A local registration routes its jobs to its queue whoever publishes the options
        # (a producer login may not): a job must not wait in a queue nobody serves.
        queue = (
            queue or (ref.default_queue if ref else None) or (task.options.queue if task else None)
        )
        dedup_key = options.dedup_key
        if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key):
            raise SoniqError(
                INVALID_OPTION, f"dedup_key must be a non-empty string, got {dedup_key!r}"
            )
        return EnqueueRequest(
            task_name=name,
            args=job_args,
            args_json=args_json,
            queue=queue,
            priority=None
            if options.priority is None
            else whole_number("priority", options.priority, 1, 1000),
            scheduled_at=run_at(options.scheduled_at, lambda: datetime.now(timezone.utc)),
            retries=None
            if options.retries is None
            else whole_number("retries", options.retries, 0, 1000),
            unique=None if options.unique is None else boolean("unique", options.unique),
            dedup_key=dedup_key,
            timeout=None
            if options.timeout is None
            else seconds("timeout", options.timeout, LONGEST_TIMEOUT),
        )

    def _unknown(self, name: str) -> None:
        mode = self.settings.enqueue_validation
        if mode == "strict":
            raise SoniqError(
                UNKNOWN_TASK_NAME,
                f"task {name!r} is not registered in this app and SONIQ_ENQUEUE_VALIDATION is 'strict': "
                "register it with @app.job(name=...), enqueue through a TaskRef, or set "
                "SONIQ_ENQUEUE_VALIDATION=warn or none for a producer that only knows task names",
            )
        if mode == "warn" and name not in self._warned:
            self._warned.add(name)
            log.warning("enqueueing task %r, which is not registered in this app", name)
