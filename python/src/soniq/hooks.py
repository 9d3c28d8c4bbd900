"""Hooks (`before_job`, `after_job`, `on_error`) and middleware. A hook may be sync or
async; one that raises is logged and ignored: it never breaks a job."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .job import JobContext

log = logging.getLogger("soniq")

Hook = Callable[..., Any]
# `async def middleware(ctx, call_next)`: `await call_next()` runs the rest of the chain.
Middleware = Callable[[JobContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]


@dataclass
class Hooks:
    before_job: list[Hook] = field(default_factory=list)
    after_job: list[Hook] = field(default_factory=list)
    on_error: list[Hook] = field(default_factory=list)

    async def run(self, event: str, *args: Any) -> None:
        for hook in getattr(self, event):
            try:
                outcome = hook(*args)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as e:
                log.warning("Hook %s failed: %r", event, e)


def chain(
    middlewares: list[Middleware], ctx: JobContext, call: Callable[[], Awaitable[Any]]
) -> Awaitable[Any]:
    """The handler call wrapped by the middlewares, the first registered outermost."""
    for middleware in reversed(middlewares):
        call = _wrap(middleware, ctx, call)
    return call()


def _wrap(
    middleware: Middleware, ctx: JobContext, call_next: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    async def wrapped() -> Any:
        return await middleware(ctx, call_next)

    return wrapped
