"""Registered handlers: `@app.job(...)` options checked and turned into the defaults
`soniq.register_task` publishes (as the Rust runner does, runner/src/registry.rs), and
the handler's signature, read once, to check arguments and inject `JobContext`."""

from __future__ import annotations

import inspect
import math
import os
import re
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .errors import INVALID_OPTION, INVALID_TASK_NAME, SoniqError
from .job import JobContext

LONGEST_TIMEOUT = 30 * 24 * 3600.0
LONGEST_DELAY = 365 * 24 * 3600.0
MAX_DELAYS = 100

JOB_OPTIONS = frozenset(
    {
        "name", "retries", "max_retries", "priority", "queue", "unique", "retry_delay",
        "retry_backoff", "retry_max_delay", "retry_jitter", "timeout", "result_ttl", "validate",
        "args_model",
    }
)  # fmt: skip


def check_task_name(name: object, pattern: str) -> str:
    if not isinstance(name, str) or re.fullmatch(pattern, name) is None:
        raise SoniqError(
            INVALID_TASK_NAME,
            f"task name {name!r} does not match SONIQ_TASK_NAME_PATTERN ({pattern!r})",
        )
    return name


def derive_task_name(function: Callable[..., Any]) -> str:
    """`module.qualname`, as the reference documents (nested functions lose `<locals>`). A
    function of a script run as `python jobs.py` is named after its module, `jobs`, not
    `__main__`: the worker imports it as `jobs`, and both must agree on the name."""
    qualname = function.__qualname__.replace(".<locals>", "")
    return f"{_module_name(function.__module__)}.{qualname}"


def _module_name(module: str) -> str:
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name)
    path = getattr(main, "__file__", None)
    return os.path.splitext(os.path.basename(path))[0] if path else module


def whole_number(what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SoniqError(
            INVALID_OPTION, f"{what} must be a whole number from {low} to {high}, got {value!r}"
        )
    return value


def seconds(what: str, value: object, longest: float) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= longest
    ):
        raise SoniqError(
            INVALID_OPTION,
            f"{what} must be a number of seconds from 0 to {longest:g}, got {value!r}",
        )
    return float(value)


def boolean(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SoniqError(INVALID_OPTION, f"{what} must be True or False, got {value!r}")
    return value


@dataclass(frozen=True)
class TaskOptions:
    """A task's registered options; None means "not set" (the database's default applies)."""

    queue: str | None = None
    priority: int | None = None
    retries: int | None = None
    timeout: float | None = None
    unique: bool | None = None
    retry_delay: float | tuple[float, ...] | None = None
    retry_backoff: bool | None = None
    retry_max_delay: float | None = None
    retry_jitter: bool | None = None
    result_ttl: float | None = None

    @classmethod
    def checked(cls, options: Mapping[str, Any]) -> TaskOptions:
        """Options as `@app.job` takes them; each bad value is an error that names it."""
        retries = options.get("max_retries", options.get("retries"))
        delay = options.get("retry_delay")
        if isinstance(delay, (list, tuple)):
            if not 1 <= len(delay) <= MAX_DELAYS:
                raise SoniqError(
                    INVALID_OPTION,
                    f"retry_delay must list 1 to {MAX_DELAYS} delays, got {len(delay)}",
                )
            delay = tuple(seconds("each retry_delay", d, LONGEST_DELAY) for d in delay)
            if options.get("retry_backoff"):
                raise SoniqError(
                    INVALID_OPTION,
                    "retry_backoff cannot be combined with a per-attempt retry_delay list: "
                    "the list already sets each delay",
                )
        elif delay is not None:
            delay = seconds("retry_delay", delay, LONGEST_DELAY)
        queue = options.get("queue")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise SoniqError(INVALID_OPTION, f"queue must be a non-empty string, got {queue!r}")

        def opt(name: str, check: Callable[[str, Any], Any]) -> Any:
            value = options.get(name)
            return None if value is None else check(name, value)

        return cls(
            queue=queue,
            priority=opt("priority", lambda n, v: whole_number(n, v, 1, 1000)),
            retries=None if retries is None else whole_number("retries", retries, 0, 1000),
            timeout=opt("timeout", lambda n, v: seconds(n, v, LONGEST_TIMEOUT)),
            unique=opt("unique", boolean),
            retry_delay=delay,
            retry_backoff=opt("retry_backoff", boolean),
            retry_max_delay=opt("retry_max_delay", lambda n, v: seconds(n, v, LONGEST_DELAY)),
            retry_jitter=opt("retry_jitter", boolean),
            result_ttl=opt("result_ttl", lambda n, v: seconds(n, v, 365 * 24 * 3600.0)),
        )

    def to_defaults(self) -> dict[str, Any]:
        """The document `soniq.register_task` takes: the options that are set."""
        values = {
            "queue": self.queue,
            "priority": self.priority,
            "retries": self.retries,
            "timeout": self.timeout,
            "unique": self.unique,
            "retry_delay": list(self.retry_delay)
            if isinstance(self.retry_delay, tuple)
            else self.retry_delay,
            "retry_backoff": self.retry_backoff,
            "retry_max_delay": self.retry_max_delay,
            "retry_jitter": self.retry_jitter,
            "result_ttl": self.result_ttl,
        }
        return {k: v for k, v in values.items() if v is not None}

    def retry_delay_after(self, attempt: int) -> float:
        """Seconds before the retry after `attempt` failed, the jitter's upper bound (the
        database's soniq.retry_delay; the in-memory queue uses this)."""
        delays = (
            self.retry_delay if isinstance(self.retry_delay, tuple) else (self.retry_delay or 0.0,)
        )
        delay = delays[min(max(attempt, 1) - 1, len(delays) - 1)]
        if self.retry_backoff:
            delay = (delay if delay > 0 else 1.0) * 2.0 ** min(attempt - 1, 62)
        if self.retry_max_delay is not None:
            delay = min(delay, self.retry_max_delay)
        return max(min(delay, LONGEST_DELAY), 0.0)


def _is_context(annotation: object) -> bool:
    if annotation is JobContext:
        return True
    if isinstance(annotation, str):  # an annotation that could not be resolved
        return annotation.split(".")[-1] in (
            "JobContext",
            "Optional[JobContext]",
            "JobContext | None",
        )
    return JobContext in typing.get_args(annotation)  # Optional[JobContext]


@dataclass(frozen=True)
class Periodic:
    """The schedule of an `@app.periodic` job: exactly one of cron and every (seconds)."""

    cron: str | None
    every: float | None
    args: Mapping[str, Any]


@dataclass
class Task:
    """A registered handler."""

    name: str
    function: Callable[..., Any]
    options: TaskOptions
    args_model: Any
    is_async: bool
    signature: inspect.Signature
    context_parameter: str | None
    periodic: Periodic | None = None

    @classmethod
    def of(
        cls, name: str, function: Callable[..., Any], options: TaskOptions, args_model: Any
    ) -> Task:
        signature = inspect.signature(function)
        try:
            hints = typing.get_type_hints(function)
        except Exception:  # an annotation naming something not importable: read it as text
            hints = {}
        context = None
        for parameter in signature.parameters.values():
            annotation = hints.get(parameter.name, parameter.annotation)
            if _is_context(annotation):
                context = parameter.name
                break
        if args_model is not None and not hasattr(args_model, "model_validate"):
            raise SoniqError(
                INVALID_OPTION, f"validate= must be a pydantic model class, got {args_model!r}"
            )
        return cls(
            name=name,
            function=function,
            options=options,
            args_model=args_model,
            is_async=inspect.iscoroutinefunction(function),
            signature=signature,
            context_parameter=context,
        )

    def argument_problem(self, args: Mapping[str, Any]) -> str | None:
        """Why `args` cannot be the handler's arguments, or None."""
        if self.args_model is not None:
            try:
                self.args_model.model_validate(dict(args))
            except Exception as e:
                return str(e)
            return None
        try:
            self._bind(args)
        except TypeError as e:
            return str(e)
        return None

    def call_arguments(self, args: Mapping[str, Any], context: JobContext) -> dict[str, Any]:
        """The keyword arguments of one call: the args (coerced by the model if there is
        one) and the context. Raises TypeError when they do not fit."""
        values = dict(args)
        if self.args_model is not None:
            values = self.args_model.model_validate(values).model_dump()
        kwargs = self._bind(values).arguments
        if self.context_parameter is not None:
            kwargs[self.context_parameter] = context
        return dict(kwargs)

    def _bind(self, args: Mapping[str, Any]) -> inspect.BoundArguments:
        parameters = [
            p for p in self.signature.parameters.values() if p.name != self.context_parameter
        ]
        without_context = self.signature.replace(parameters=parameters)
        return without_context.bind(**args)


class Registry:
    """The handlers of one app, by task name and by function."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._by_function: dict[Callable[..., Any], Task] = {}

    def add(self, task: Task) -> None:
        if task.name in self.tasks:
            raise SoniqError(
                INVALID_TASK_NAME,
                f"task {task.name!r} is registered twice (by {self.tasks[task.name].function.__qualname__} "
                f"and {task.function.__qualname__})",
            )
        self.tasks[task.name] = task
        self._by_function[task.function] = task

    def of_function(self, function: Callable[..., Any]) -> Task | None:
        return self._by_function.get(function)

    def names(self) -> list[str]:
        return sorted(self.tasks)

    def get_job(self, name: str) -> dict[str, Any] | None:
        """A registered job's metadata by task name: `name`, `func`, `queue`, `priority`,
        `max_retries` (the extension's default, 3, when not set) and `timeout`; None if unknown."""
        task = self.tasks.get(name)
        if task is None:
            return None
        o = task.options
        return {
            "name": task.name, "func": task.function, "queue": o.queue or "default",
            "priority": o.priority or 100, "max_retries": DEFAULT_RETRIES if o.retries is None else o.retries,
            "timeout": o.timeout,
        }  # fmt: skip


# The extension's defaults where a task sets nothing (soniq.enqueue).
DEFAULT_RETRIES = 3
JobRegistry = Registry
